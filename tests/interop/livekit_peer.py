#!/usr/bin/env python3
"""An independent LiveKit peer built on LiveKit's own Python SDK (`livekit-api` on PyPI).

Reads one JSON request on stdin, writes one JSON answer on stdout:
  {"op": "sign", "apiKey", "apiSecret", "events": [<WebhookEvent as JSON>...]}
      -> [{"body": str, "authorization": str}, ...]  signed the way the LiveKit server signs webhooks:
         the body is protobuf JSON of a WebhookEvent, the Authorization header is an access token
         (iss = API key) whose sha256 claim is base64(sha256(body)). Each is checked with the SDK's
         own WebhookReceiver before it is handed out.
  {"op": "verify", "apiKey", "apiSecret", "token"} -> the token's claims as the SDK reads them.
"""
import base64
import datetime
import hashlib
import json
import sys

from google.protobuf.json_format import MessageToJson, ParseDict
from livekit import api
from livekit.protocol.webhook import WebhookEvent


def sign(request):
    receiver = api.WebhookReceiver(api.TokenVerifier(request["apiKey"], request["apiSecret"]))
    signed = []
    for event in request["events"]:
        message = ParseDict(event, WebhookEvent(), ignore_unknown_fields=False)
        body = MessageToJson(message, indent=None)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        token = (
            api.AccessToken(request["apiKey"], request["apiSecret"])
            .with_sha256(digest)
            .with_ttl(datetime.timedelta(minutes=5))
            .to_jwt()
        )
        receiver.receive(body, token)
        signed.append({"body": body, "authorization": token})
    return signed


def verify(request):
    claims = api.TokenVerifier(request["apiKey"], request["apiSecret"]).verify(request["token"])
    video = claims.video
    return {
        "identity": claims.identity,
        "name": claims.name,
        "video": {
            "roomJoin": bool(video and video.room_join),
            "room": video.room if video else None,
            "canPublish": video.can_publish if video else None,
            "canSubscribe": video.can_subscribe if video else None,
            "roomAdmin": bool(video and video.room_admin),
        },
    }


def main():
    request = json.load(sys.stdin)
    answer = {"sign": sign, "verify": verify}[request["op"]](request)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
