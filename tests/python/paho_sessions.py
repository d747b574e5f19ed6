"""The Eclipse Paho client (paho-mqtt 2, MQTT 3.1.1 and 5) against tablecast's persistent
sessions, in three phases the integration test runs around a restart:

    python3 paho_sessions.py PORT subscribe   # persistent sessions subscribe, then leave
    python3 paho_sessions.py PORT publish     # messages are published while they are away
    python3 paho_sessions.py PORT resume      # they come back: session present, messages kept

Exits non-zero, saying what did not hold, otherwise prints "ok".
"""

import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
WAIT = 20


def client(client_id, version):
    if version == 5:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
    c.connected = threading.Event()
    c.received = []
    c.arrived = threading.Condition()

    def on_connect(c, userdata, flags, reason_code, properties):
        c.session_present = flags.session_present
        c.connect_reason = reason_code
        c.connected.set()

    def on_message(c, userdata, message):
        with c.arrived:
            c.received.append((message.topic, message.payload.decode(), message.qos))
            c.arrived.notify_all()

    c.on_connect = on_connect
    c.on_message = on_message
    return c


def connect(c, port, version):
    if version == 5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        c.connect(HOST, port, clean_start=False, properties=properties)
    else:
        c.connect(HOST, port)
    c.loop_start()
    if not c.connected.wait(WAIT):
        fail(f"{c._client_id!r} got no CONNACK")
    if c.connect_reason.is_failure:
        fail(f"{c._client_id!r} was refused: {c.connect_reason}")


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def leave(c):
    c.disconnect()
    c.loop_stop()


CLIENTS = [("paho-v5", 5), ("paho-v311", 4)]


def main():
    port, phase = int(sys.argv[1]), sys.argv[2]
    if phase == "subscribe":
        for client_id, version in CLIENTS:
            c = client(client_id, version)
            connect(c, port, version)
            done = threading.Event()
            c.on_subscribe = lambda *args: done.set()
            c.subscribe(f"paho/{client_id}/#", qos=2)
            if not done.wait(WAIT):
                fail(f"{client_id}: no SUBACK")
            leave(c)
    elif phase == "publish":
        publisher = client("paho-publisher", 5)
        publisher.connect(HOST, port, clean_start=True)
        publisher.loop_start()
        publisher.connected.wait(WAIT)
        for client_id, _ in CLIENTS:
            for n, qos in enumerate([1, 2]):
                info = publisher.publish(f"paho/{client_id}/msg", f"kept {n}", qos=qos)
                info.wait_for_publish(WAIT)
                if not info.is_published():
                    fail(f"publish to {client_id} not acknowledged")
        leave(publisher)
    elif phase == "resume":
        for client_id, version in CLIENTS:
            c = client(client_id, version)
            connect(c, port, version)
            if not c.session_present:
                fail(f"{client_id}: session_present=0 after the restart")
            with c.arrived:
                c.arrived.wait_for(lambda: len(c.received) >= 2, WAIT)
            expected = [(f"paho/{client_id}/msg", "kept 0", 1), (f"paho/{client_id}/msg", "kept 1", 2)]
            if c.received != expected:
                fail(f"{client_id}: got {c.received}, expected {expected}")
            leave(c)
    else:
        fail(f"unknown phase {phase}")
    print("ok")


main()
