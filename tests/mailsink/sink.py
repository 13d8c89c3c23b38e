#!/usr/bin/python3
"""The project's SMTP sink for tests (aiosmtpd >= 1.4; Debian python3-aiosmtpd).

    sink.py --dir DIR --port P --smtps-port Q --cert C --key K [--user U --password PW]

* --port: plain SMTP offering STARTTLS; AUTH only after STARTTLS.
* --smtps-port: implicit TLS; AUTH offered at once (aiosmtpd does not count
  implicit TLS as TLS, so auth_require_tls is off there).
* With --user/--password, AUTH PLAIN/LOGIN is checked and required before
  MAIL FROM on both ports.
* Every accepted message: DIR/msg-NNNNN.eml (the bytes as received) and one
  JSON line in DIR/envelopes.jsonl
  {"n", "mail_from", "rcpt_tos", "auth_user", "tls", "port", "file"}.
* DIR/ready is written once both ports answer.
* Faults: DIR/fault is read at every RCPT and DATA; one directive a line,
  each optionally ending in " xN" (apply to the next N commands, then the
  line is removed; without it the line stays until the test changes it):
    rcpt 450 4.2.0 Try again later   answer RCPT TO with this
    data 554 5.7.1 Rejected         answer the end of DATA with this
    drop                            close the connection at the end of DATA,
                                    nothing stored, no reply
    accept-drop                     store the message, then close the
                                    connection without a reply (the sender
                                    cannot know it was delivered)
    slow 300                        sleep 300 ms before answering DATA
"""
import argparse
import asyncio
import json
import logging
import os
import re
import signal
import ssl
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

ap = argparse.ArgumentParser()
ap.add_argument("--dir", required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--smtps-port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--user")
ap.add_argument("--password")
args = ap.parse_args()
os.makedirs(args.dir, exist_ok=True)

LOCK = threading.Lock()
FAULT = os.path.join(args.dir, "fault")
COUNTED = re.compile(r"^(.*?)\s+x(\d+)$")
stored = [len([f for f in os.listdir(args.dir) if f.startswith("msg-") and f.endswith(".eml")])]


def take_fault(verbs):
    """The first fault line whose verb is in `verbs`, consuming one use of
    a counted line. Returns the directive without its counter, or None."""
    with LOCK:
        try:
            with open(FAULT, encoding="utf-8") as fh:
                lines = [l.rstrip("\n") for l in fh if l.strip()]
        except FileNotFoundError:
            return None
        for i, line in enumerate(lines):
            text, count = line.strip(), None
            m = COUNTED.match(text)
            if m:
                text, count = m.group(1).strip(), int(m.group(2))
            if text.split(" ", 1)[0] not in verbs:
                continue
            if count is not None:
                if count <= 1:
                    del lines[i]
                else:
                    lines[i] = f"{text} x{count - 1}"
                tmp = FAULT + ".tmp"
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write("".join(l + "\n" for l in lines))
                os.replace(tmp, FAULT)
            return text
        return None


def slow_ms():
    try:
        with open(FAULT, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "slow":
                    return int(parts[1])
    except (FileNotFoundError, ValueError):
        pass
    return 0


def store(session, envelope, port, implicit):
    with LOCK:
        stored[0] += 1
        n = stored[0]
        name = f"msg-{n:05d}.eml"
        tmp = os.path.join(args.dir, name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(envelope.original_content)
        os.replace(tmp, os.path.join(args.dir, name))
        auth = session.auth_data
        record = {
            "n": n,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": auth.login.decode() if isinstance(auth, LoginPassword) else None,
            "tls": implicit or session.ssl is not None,
            "port": port,
            "file": name,
        }
        with open(os.path.join(args.dir, "envelopes.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


class Handler:
    def __init__(self, port, implicit):
        self.port, self.implicit = port, implicit

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        fault = take_fault({"rcpt"})
        if fault:
            return fault[5:]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        delay = slow_ms()
        if delay:
            await asyncio.sleep(delay / 1000)
        fault = take_fault({"data", "drop", "accept-drop"})
        if fault and fault.startswith("data "):
            return fault[5:]
        if fault == "drop":
            server.transport.abort()
            return "421 4.4.0 dropped"
        store(session, envelope, self.port, self.implicit)
        if fault == "accept-drop":
            server.transport.abort()
            return "421 4.4.0 dropped"
        return "250 2.0.0 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == args.user
        and auth_data.password.decode() == args.password
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(args.cert, args.key)
warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
# aiosmtpd logs a warning for AUTH without TLS on the implicit-TLS port.
logging.getLogger("mail.log").setLevel(logging.ERROR)
common = dict(
    hostname=args.host,
    authenticator=authenticator if args.user else None,
    auth_required=bool(args.user),
    enable_SMTPUTF8=True,
    data_size_limit=64 * 1024 * 1024,
    ident="xxdc-test-sink",
)
controllers = [
    Controller(Handler(args.port, False), port=args.port, tls_context=ctx,
               require_starttls=False, auth_require_tls=True, **common),
    Controller(Handler(args.smtps_port, True), port=args.smtps_port, ssl_context=ctx,
               auth_require_tls=False, **common),
]
for c in controllers:
    c.start()  # binds, and waits until the server answers
with open(os.path.join(args.dir, "ready"), "w") as fh:
    fh.write(str(os.getpid()))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
for c in controllers:
    c.stop()
