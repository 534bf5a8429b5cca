"""Background load in its own process: periodic ``kit/v1/{device}/report`` messages at a set rate.

``python -m bench.loadgen URL --rate R --seconds S --sites N [--prefix b]`` publishes QoS 1
reports (as the bridge does) for the detector ``{prefix}d{n}`` and valve ``{prefix}v{n}`` of
sites 0..N-1 in turn, each with its own rising ``seq``: nothing is a duplicate and nothing is
a leak (the everyday stream). Bounded: ``rate * seconds`` messages, then it waits (at most
``ACK_WAIT_S``) for the broker's acknowledgements and prints one JSON line: sent, acked,
seconds spent sending, the rate achieved.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.contract import report_topic
from gateway.mqtturl import parse_mqtt_url

ACK_WAIT_S = 30.0
TICK_S = 0.005


def payloads(sites: int, prefix: str, count: int) -> list[tuple[str, bytes]]:
    """``count`` report messages cycling over the sites' detectors and valves."""
    out = []
    for i in range(count):
        n, valve = (i // 2) % sites, i % 2
        seq = (i // (2 * sites)) & 0xFFFF
        if valve:
            body = f'"kind":"valve","seq":{seq},"event":"periodic","valve":{{"state":"open"}}'
            device = f"{prefix}v{n}"
        else:
            # 0.0 .. 2.9 %LEL, steady per detector: clean air. (A value varying from one
            # report to the next rose fast enough to raise gas_rising alarms by the hundred.)
            lel = (n * 7) % 30 / 10
            body = (
                f'"kind":"detector","seq":{seq},"event":"periodic",'
                f'"detector":{{"lel_pct":{lel},"flags":[]}}'
            )
            device = f"{prefix}d{n}"
        out.append((report_topic(device), f"{{{body}}}".encode()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--sites", type=int, required=True)
    parser.add_argument("--prefix", default="b")
    parser.add_argument("--client-id", default="bench-loadgen")
    args = parser.parse_args()
    url = parse_mqtt_url(args.url)
    count = int(args.rate * args.seconds)
    messages = payloads(args.sites, args.prefix, count)

    acked = 0
    done = threading.Event()

    def on_publish(_c: object, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal acked
        acked += 1
        if acked >= count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id)
    client.on_publish = on_publish
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(url.host, url.port)
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    began = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - began) * args.rate) + 1)
        while sent < due:
            topic, payload = messages[sent]
            client.publish(topic, payload, qos=1)
            sent += 1
        time.sleep(TICK_S)
    seconds = time.monotonic() - began
    done.wait(ACK_WAIT_S)
    summary = {"sent": sent, "acked": acked, "seconds": seconds, "rate": sent / seconds}
    print(json.dumps(summary), flush=True)
    # Disconnect, then stop the network thread: the other order waits ~1 s in paho's loop.
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
