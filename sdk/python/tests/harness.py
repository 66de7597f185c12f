"""Runs a handler program as the worker would and reads what it writes.

Every wait is a read with a timeout, so a test never synchronises on a sleep
and a broken program fails the test instead of hanging it.
"""

import json
import os
import queue
import subprocess
import sys
import threading

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = os.path.join(SDK, "tests", "programs")
TIMEOUT = 10.0


class Program(object):
    def __init__(self, script, env=None):
        environment = dict(os.environ, PYTHONPATH=SDK)
        environment.pop("PYTHONUNBUFFERED", None)  # buffered, as under a real worker
        environment.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(PROGRAMS, script)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment)
        self.stdout_lines = queue.Queue()
        self.stderr_lines = queue.Queue()
        self.all_stdout = []
        self.all_stderr = []
        for stream, lines, record in ((self.process.stdout, self.stdout_lines, self.all_stdout),
                                      (self.process.stderr, self.stderr_lines, self.all_stderr)):
            threading.Thread(target=self._pump, args=(stream, lines, record), daemon=True).start()

    @staticmethod
    def _pump(stream, lines, record):
        for line in stream:
            text = line.decode("utf-8")
            record.append(text)
            lines.put(text)
        lines.put(None)

    def send(self, message):
        line = message if isinstance(message, str) else json.dumps(message)
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def read(self, timeout=TIMEOUT):
        """The next stdout line, parsed; fails on end of output or timeout."""
        try:
            line = self.stdout_lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line on stdout within %.0f s; stderr: %s"
                                 % (timeout, "".join(self.all_stderr)))
        if line is None:
            raise AssertionError("stdout closed; stderr: %s" % "".join(self.all_stderr))
        return json.loads(line)

    def hello(self):
        message = self.read()
        assert message.get("op") == "hello", message
        return message

    def request(self, message):
        self.send(message)
        return self.read()

    def wait_stderr(self, predicate, timeout=TIMEOUT):
        """The first stderr line (parsed when it is JSON) that satisfies `predicate`."""
        while True:
            try:
                line = self.stderr_lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no such stderr line within %.0f s; stderr: %s"
                                     % (timeout, "".join(self.all_stderr)))
            if line is None:
                raise AssertionError("stderr closed; stderr: %s" % "".join(self.all_stderr))
            try:
                value = json.loads(line)
            except ValueError:
                value = line.rstrip("\n")
            if predicate(value):
                return value

    def close(self, timeout=TIMEOUT):
        """Close stdin as the worker does; returns (exit status, answers still to come)."""
        self.process.stdin.close()
        status = self.process.wait(timeout)
        rest = []
        while True:
            line = self.stdout_lines.get(timeout=timeout)
            if line is None:
                return status, rest
            rest.append(json.loads(line))

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass


def process_request(request_id, handler, job, **fields):
    message = {"id": request_id, "op": "process", "handler": handler, "version": "1.0.0",
               "flow_id": "f1", "workflow": "tests", "phase": "testing",
               "job_id": "f1.1.0.%d" % request_id, "attempt": 1, "job": job, "data": {}}
    message.update(fields)
    return message


def enumerate_request(request_id, handler, data, **fields):
    message = {"id": request_id, "op": "enumerate", "handler": handler, "version": "1.0.0",
               "flow_id": "f1", "workflow": "tests", "phase": "testing",
               "data": data, "outputs": {}, "error": None}
    message.update(fields)
    return message
