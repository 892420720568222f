#!/usr/bin/env python3
"""The lab's outside mail server: a minimal SMTP receiver (RFC 5321 subset) that
stores each accepted message as a file in DIR. It stands for "a mail server
abroad" that the domestic Postfix relays to; the lab checks a message arrived.

usage: smtp_sink.py ADDRESS PORT DIR
"""
import os
import socketserver
import sys
import time


class Session(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        self.reply("220 mx.outside.lab ESMTP")
        sender, recipients = None, []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            command = line.decode("ascii", "replace").strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 mx.outside.lab")
            elif verb == "MAIL":
                sender, recipients = command[10:], []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command[8:])
                self.reply("250 OK")
            elif verb == "DATA":
                if sender is None or not recipients:
                    self.reply("503 MAIL and RCPT first")
                    continue
                self.reply("354 End with <CRLF>.<CRLF>")
                body = []
                while True:
                    data = self.rfile.readline(65536)
                    if not data or data in (b".\r\n", b".\n"):
                        break
                    body.append(data[1:] if data.startswith(b"..") else data)
                name = os.path.join(sys.argv[3], "%d-%d.eml" % (time.time_ns(), os.getpid()))
                with open(name + ".tmp", "wb") as out:
                    out.write(b"X-Lab-Envelope: %s -> %s\r\n" % (sender.encode(), ",".join(recipients).encode()))
                    out.writelines(body)
                os.rename(name + ".tmp", name)
                self.reply("250 OK queued")
                sender, recipients = None, []
            elif verb == "RSET":
                sender, recipients = None, []
                self.reply("250 OK")
            elif verb == "NOOP":
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    os.makedirs(sys.argv[3], exist_ok=True)
    with Server((sys.argv[1], int(sys.argv[2])), Session) as server:
        print("smtp sink listening", flush=True)
        server.serve_forever()
