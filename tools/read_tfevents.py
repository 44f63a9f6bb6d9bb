#!/usr/bin/env python3
"""Reads TensorBoard event files as cvx writes them and prints their content as JSON.

    tools/read_tfevents.py FILE...

Every TFRecord is checked (length CRC and data CRC, masked CRC-32C) and parsed with python3-protobuf
against proto/tensorboard_event.proto, compiled here with protoc. Prints
{"files": [{"file", "file_version", "wall_time"}], "scalars": [{"step", "tag", "value"}],
 "images": [{"step", "tag", "width", "height", "colorspace", "bytes", "png"}]};
exits 1 naming the file and the offset on a bad or truncated record.
"""
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "tensorboard_event.proto")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


TABLE = crc32c_table()


def masked_crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def load_event_module():
    out = tempfile.mkdtemp(prefix="read_tfevents_")
    proto_dir = os.path.dirname(os.path.abspath(PROTO))
    try:
        subprocess.run(["protoc", "--python_out=" + out, "-I" + proto_dir, os.path.abspath(PROTO)], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit("read_tfevents: cannot compile %s with protoc (apt install protobuf-compiler): %s" % (PROTO, e))
    sys.path.insert(0, out)
    try:
        return importlib.import_module("tensorboard_event_pb2")
    except ImportError as e:
        sys.exit("read_tfevents: python3-protobuf is missing (apt install python3-protobuf): %s" % e)
    finally:
        sys.path.remove(out)
        shutil.rmtree(out, ignore_errors=True)


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        def fail(what):
            sys.exit("read_tfevents: %s: %s in the record at byte %d" % (path, what, offset))

        if offset + 12 > len(data):
            fail("truncated header")
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        if masked_crc32c(header) != length_crc:
            fail("length CRC mismatch")
        end = offset + 12 + length
        if end + 4 > len(data):
            fail("truncated data")
        body = data[offset + 12:end]
        (data_crc,) = struct.unpack("<I", data[end:end + 4])
        if masked_crc32c(body) != data_crc:
            fail("data CRC mismatch")
        yield body
        offset = end + 4


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: read_tfevents.py FILE...")
    pb = load_event_module()
    result = {"files": [], "scalars": [], "images": []}
    for path in sys.argv[1:]:
        first = True
        for body in records(path):
            event = pb.Event()
            event.ParseFromString(body)
            if first:
                if event.WhichOneof("what") != "file_version":
                    sys.exit("read_tfevents: %s: the first record has no file_version" % path)
                result["files"].append({"file": path, "file_version": event.file_version,
                                        "wall_time": event.wall_time})
                first = False
                continue
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    result["scalars"].append({"step": event.step, "tag": value.tag, "value": value.simple_value})
                elif kind == "image":
                    image = value.image
                    result["images"].append({"step": event.step, "tag": value.tag, "width": image.width,
                                             "height": image.height, "colorspace": image.colorspace,
                                             "bytes": len(image.encoded_image_string),
                                             "png": image.encoded_image_string.startswith(PNG_MAGIC)})
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
