#!/usr/bin/env python3
"""Measures how often a broker handles a PUBLISH before a SUBSCRIBE that was sent first.

The pattern many users' tests have: client A sends SUBSCRIBE and, without waiting for the
SUBACK, client B publishes on that topic. A broker that handles packets in arrival order
(Mosquitto, one thread) always delivers; one that lets B's packet overtake A's misses it.

Both clients are raw MQTT 3.1.1 over loopback sockets written from one thread, so the
SUBSCRIBE is on the wire before the PUBLISH every time: a miss is the broker's doing. (Client
libraries with a network thread per client, such as paho-mqtt's `loop_start`, race their two
writes themselves: with them every broker misses, Mosquitto included.)

    python3 scripts/arrival_order.py [--port 1883] [--rounds 1000] [--qos 0]

Standard library only. Loopback only.
"""
import argparse
import socket
import time


def mqtt_string(text):
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def packet(first_byte, body):
    length = len(body)
    encoded = bytearray()
    while True:
        byte = length % 128
        length //= 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([first_byte]) + bytes(encoded) + body


def connect(host, port, client_id):
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = mqtt_string("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big")
    sock.sendall(packet(0x10, body + mqtt_string(client_id)))
    reader = Reader(sock)
    kind, _ = reader.next(5.0)
    assert kind == 2, f"expected CONNACK, got packet type {kind}"
    return sock, reader


class Reader:
    """Splits what a socket receives into (packet type, body)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def next(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse()
            if parsed:
                return parsed
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.buf += chunk

    def _parse(self):
        if len(self.buf) < 2:
            return None
        length, multiplier, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            byte = self.buf[i]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(self.buf) < i + length:
            return None
        kind, body = self.buf[0] >> 4, self.buf[i:i + length]
        self.buf = self.buf[i + length:]
        return kind, body


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--qos", type=int, default=0, choices=[0, 1])
    parser.add_argument("--wait", type=float, default=0.5, help="seconds to wait per round")
    args = parser.parse_args()

    sub, sub_reader = connect(args.host, args.port, "arrival-sub")
    pub, pub_reader = connect(args.host, args.port, "arrival-pub")
    missed = 0
    for i in range(args.rounds):
        topic = f"arrival/{i}"
        packet_id = (i % 65535 + 1).to_bytes(2, "big")
        sub.sendall(packet(0x82, packet_id + mqtt_string(topic) + bytes([args.qos])))
        header = 0x30 | (args.qos << 1)
        publish_id = packet_id if args.qos else b""
        pub.sendall(packet(header, mqtt_string(topic) + publish_id + b"x"))
        delivered = False
        deadline = time.monotonic() + args.wait
        while not delivered:
            got = sub_reader.next(max(0.0, deadline - time.monotonic()))
            if got is None:
                break
            kind, body = got
            if kind == 3:
                topic_len = int.from_bytes(body[:2], "big")
                if body[2:2 + topic_len].decode() == topic:
                    delivered = True
                if (body and args.qos) and kind == 3:
                    id_at = 2 + topic_len
                    sub.sendall(packet(0x40, body[id_at:id_at + 2]))
        if not delivered:
            missed += 1
        if args.qos:
            pub_reader.next(args.wait)  # the PUBACK
        sub.sendall(packet(0xA2, packet_id + mqtt_string(topic)))
    sub.close()
    pub.close()
    print(f"{missed} of {args.rounds} publishes overtook the SUBSCRIBE sent before them "
          f"(QoS {args.qos}, {args.host}:{args.port})")


if __name__ == "__main__":
    main()
