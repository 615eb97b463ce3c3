"""Splitting inputs that are too long for one MiMo call, and joining the answers back up.

Pure or file-only code (no Redis, HTTP or arq): text at sentence boundaries, WAV streamed
chunk by chunk (cut at quiet points, optionally down-mixed and resampled first), MP3 at
frame boundaries, other formats converted to WAV; transcripts and audio stitched in order.
"""
