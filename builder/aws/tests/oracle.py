#!/usr/bin/env python3
"""An oracle independent of berth's client: boto3 (the AWS SDK for Python) reading what berth
left in moto. Usage: oracle.py ENDPOINT REGION COMMAND ARGS...; prints JSON.

  blocks SNAPSHOT_ID      -> {"<index>": [length, sha256hex], ...} via ListSnapshotBlocks + GetSnapshotBlock
  images NAME             -> [{"id", "name", "state", "snapshots": [...]}] owned by self with that name
  snapshots TAG_KEY VALUE -> [snapshot ids] owned by self carrying that tag
  sign < REQUESTS.json    -> [signature hex] botocore's SigV4 for each recorded request
"""
import base64
import hashlib
import json
import sys

import boto3

endpoint, region, cmd, *args = sys.argv[1:]
kw = dict(
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)

if cmd == "blocks":
    (snap,) = args
    ebs = boto3.client("ebs", **kw)
    out, token = {}, None
    while True:
        call = dict(SnapshotId=snap)
        if token:
            call["NextToken"] = token
        page = ebs.list_snapshot_blocks(**call)
        for b in page.get("Blocks", []):
            idx = int(b["BlockIndex"])
            data = ebs.get_snapshot_block(
                SnapshotId=snap, BlockIndex=idx, BlockToken=b["BlockToken"]
            )["BlockData"].read()
            out[str(idx)] = [len(data), hashlib.sha256(data).hexdigest()]
        token = page.get("NextToken")
        if not token:
            break
    print(json.dumps(out))
elif cmd == "images":
    (name,) = args
    ec2 = boto3.client("ec2", **kw)
    images = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
    )["Images"]
    print(
        json.dumps(
            [
                {
                    "id": i["ImageId"],
                    "name": i["Name"],
                    "state": i.get("State"),
                    "snapshots": [
                        m["Ebs"]["SnapshotId"]
                        for m in i.get("BlockDeviceMappings", [])
                        if "Ebs" in m and "SnapshotId" in m["Ebs"]
                    ],
                }
                for i in images
            ]
        )
    )
elif cmd == "snapshots":
    key, value = args
    ec2 = boto3.client("ec2", **kw)
    snaps = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{key}", "Values": [value]}]
    )["Snapshots"]
    print(json.dumps([s["SnapshotId"] for s in snaps]))
elif cmd == "sign":
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    out = []
    for r in json.load(sys.stdin):
        auth = SigV4Auth(Credentials(r["key"], r["secret"]), r["service"], region)
        req = AWSRequest(
            method=r["method"],
            url=endpoint + r["path"],
            data=base64.b64decode(r["body"]),
            headers=r["headers"],
        )
        req.context["timestamp"] = r["amz_date"]
        creq = auth.canonical_request(req)
        out.append(auth.signature(auth.string_to_sign(req, creq), req))
    print(json.dumps(out))
else:
    sys.exit(f"unknown command {cmd}")
