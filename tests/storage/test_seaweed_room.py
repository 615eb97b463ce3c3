"""The test S3 store has room for the buckets a whole session creates: each bucket is a
SeaweedFS collection that grows 7 volumes on its first write, and a volume server capped at
50 answered every PUT of a session's 8th bucket with a 500 (CI failed on it late in a run)."""

from __future__ import annotations

import uuid

import obstore
from obstore.store import S3Store

from tests.support.seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3

#: More fresh buckets than the old cap allowed in a whole session, on top of this session's.
BUCKETS = 10


def test_a_session_can_write_to_many_fresh_buckets(seaweed: SeaweedS3) -> None:
    for _ in range(BUCKETS):
        store = S3Store(
            f"room{uuid.uuid4().hex[:12]}", endpoint=seaweed.endpoint, access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY, region=REGION,
            virtual_hosted_style_request=False, client_options={"allow_http": True},
        )  # fmt: skip
        obstore.put(store, "probe.bin", b"room")
        assert bytes(obstore.get(store, "probe.bin").bytes()) == b"room"
