"""Rebuilds the request-fuzzing seed corpus (test_hostile.py::test_request_fuzz):
valid requests of every method, encoded by wire.py. The files are committed;
run this after a change to the wire format:

    python tests/reliability/corpus/build.py
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import wire  # noqa: E402

SEEDS = {
    "snapshot-minimal": wire.snapshot_request([b"/usr/lib"]),
    "snapshot-syspath": wire.snapshot_request(
        [b"/usr/lib/python311.zip", b"/usr/lib/python3.11", b"/usr/lib/python3.11/lib-dynload",
         b"/usr/local/lib/python3.11/dist-packages", b"/usr/lib/python3/dist-packages",
         b"/tmp", b"/nonexistent/finderd-fuzz"], prefetch_bytes=1 << 20),
    "snapshot-planned": wire.snapshot_request([b"/usr/lib/python3", b"/tmp"],
                                              program_key=b"python3.11\0-m\0fuzzmod\0/usr/lib",
                                              prefetch_bytes=65536, mount_namespace=4026531841)
    + wire.f_varint(6, 1 << 20),
    "lookup-one": wire.lookup_request([b"/usr/lib/python3"]),
    "lookup-revalidate": wire.lookup_request([b"/usr", b"/usr/lib", b"/tmp/finderd-fuzz-none"],
                                             known_generations=[3, 0, 7], known_epoch=12345),
    "lookup-odd-paths": wire.lookup_request([b"/tmp/caf\xe9\xff", b"/usr/./lib", b"/usr/lib/",
                                             b"/a/../b"], mount_namespace=1),
    "report-dirs": wire.report_request(b"python3.11\0-c\0import json\0/usr/lib",
                                       [b"/usr/lib/python3/dist-packages", b"/usr/lib/python3.11/json"]),
    "report-files": wire.report_request(b"python3.11\0fuzz.py", [b"/usr/lib/python3.11"],
                                        [b"/usr/lib/python3.11/__pycache__/os.cpython-311.pyc"]),
    "stats-empty": b"",
}


def main():
    for name, body in SEEDS.items():
        with open(os.path.join(HERE, name + ".bin"), "wb") as f:
            f.write(body)
    print("wrote %d seeds to %s" % (len(SEEDS), HERE))


if __name__ == "__main__":
    main()
