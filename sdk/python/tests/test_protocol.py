"""The program side of protocol version 1, checked over real pipes."""

import json
import time
import unittest

from tests.harness import Program, enumerate_request, process_request


class ProtocolTest(unittest.TestCase):
    def setUp(self):
        self.program = Program("handlers.py")
        self.addCleanup(self.program.kill)
        self.hello = self.program.hello()

    def test_hello_lists_every_handler_with_its_version(self):
        self.assertEqual(self.hello["protocol"], 1)
        self.assertTrue(self.hello["program"].startswith("distribot-python "), self.hello)
        versions = {entry["name"]: entry["version"] for entry in self.hello["handlers"]}
        self.assertEqual(len(versions), len(self.hello["handlers"]))
        self.assertEqual(versions["Squarer"], "2.1.0")
        self.assertEqual(versions["Describer"], "1.2.0")  # "1.2" is announced as 1.2.0
        self.assertEqual(versions["Echo"], "0.0.0")       # no version given
        self.assertEqual(self.hello["handlers"][0], {"name": "Squarer", "version": "2.1.0"})

    def test_enumerate_and_process(self):
        self.assertEqual(self.program.request(enumerate_request(1, "Squarer", {"n": 3})),
                         {"id": 1, "jobs": [0, 1, 2]})
        self.assertEqual(self.program.request(process_request(2, "Squarer", 7)),
                         {"id": 2, "output": 49})
        self.assertEqual(self.program.request(enumerate_request(3, "Squarer", {"n": 0})),
                         {"id": 3, "jobs": []})

    def test_the_context_carries_the_request_fields(self):
        error = {"phase": "p", "handler": "h", "job_id": None, "attempts": 3, "message": "m"}
        outputs = {"before": {"Squarer": [1, 4]}}
        answer = self.program.request(enumerate_request(
            1, "Describer", {"n": 1}, version="1.2.0", outputs=outputs, error=error))
        self.assertEqual(answer["jobs"], [{
            "flow_id": "f1", "workflow": "tests", "phase": "testing", "handler": "Describer",
            "version": "1.2.0", "data": {"n": 1}, "outputs": outputs, "error": error}])
        answer = self.program.request(process_request(
            2, "Describer", {"page": 3}, version="1.2.0", attempt=2, data={"q": "rust"}))
        self.assertEqual(answer["output"], {
            "flow_id": "f1", "workflow": "tests", "phase": "testing", "handler": "Describer",
            "version": "1.2.0", "job_id": "f1.1.0.2", "attempt": 2, "data": {"q": "rust"},
            "job": {"page": 3}})

    def test_defaults_for_missing_operations_and_none_output(self):
        # A function handler and a class without enumerate have one job, null.
        self.assertEqual(self.program.request(enumerate_request(1, "Echo", {})),
                         {"id": 1, "jobs": [None]})
        self.assertEqual(self.program.request(enumerate_request(2, "ProcessOnly", {})),
                         {"id": 2, "jobs": [None]})
        # A class without process succeeds with no output; so does returning None.
        self.assertEqual(self.program.request(process_request(3, "EnumerateOnly", 1)), {"id": 3})
        self.assertEqual(self.program.request(process_request(4, "Echo", None)), {"id": 4})
        self.assertEqual(self.program.request(enumerate_request(5, "EnumerateOnly", {})),
                         {"id": 5, "jobs": ["a", "b"]})

    def test_async_handlers(self):
        self.assertEqual(self.program.request(enumerate_request(1, "AsyncSquarer", {"n": 4})),
                         {"id": 1, "jobs": [0, 1, 2, 3]})
        self.assertEqual(self.program.request(process_request(2, "AsyncSquarer", 5)),
                         {"id": 2, "output": 25})

    def _answer_many_out_of_order(self, handler):
        count = 64
        started = time.monotonic()
        for request_id in range(1, count + 1):
            # The first request sleeps longest, so answers come back reversed.
            job = {"i": request_id, "ms": (count + 1 - request_id) * 8}
            self.program.send(process_request(request_id, handler, job))
        answers = [self.program.read() for _ in range(count)]
        elapsed = time.monotonic() - started
        ids = [answer["id"] for answer in answers]
        self.assertEqual(sorted(ids), list(range(1, count + 1)))  # each exactly once
        self.assertNotEqual(ids, sorted(ids))
        for answer in answers:
            self.assertEqual(answer["output"], answer["id"])
        # Run one after another they would take 16.6 s; concurrently about 0.5 s.
        self.assertLess(elapsed, 8.0)
        status, rest = self.program.close()
        self.assertEqual((status, rest), (0, []))

    def test_64_blocking_requests_run_concurrently_and_are_answered_once(self):
        self._answer_many_out_of_order("Sleeper")

    def test_64_async_requests_run_concurrently_and_are_answered_once(self):
        self._answer_many_out_of_order("AsyncSleeper")

    def _check_errors(self, handler):
        retry = self.program.request(process_request(1, handler, "retry"))
        self.assertEqual(retry["error"], {"message": "the page server answered 503",
                                          "retryable": True})
        fail = self.program.request(process_request(2, handler, "fail"))
        self.assertEqual(fail["error"], {"message": "the page does not exist", "retryable": False})
        other = self.program.request(process_request(3, handler, "other"))
        self.assertEqual(other["error"], {"message": "ValueError: bad value", "retryable": True})
        traceback = self.program.wait_stderr(lambda line: isinstance(line, dict) and line["id"] == 3)
        self.assertIn("Traceback", traceback["log"])
        self.assertIn("ValueError: bad value", traceback["log"])
        self.assertIn("failing", traceback["log"])  # the handler's own frame

    def test_retry_fail_and_other_exceptions(self):
        self._check_errors("Failing")

    def test_retry_fail_and_other_exceptions_in_async_handlers(self):
        self._check_errors("AsyncFailing")

    def test_output_that_is_not_json_is_an_error_not_a_crash(self):
        for request_id, job in ((1, "object"), (2, "nan")):
            answer = self.program.request(process_request(request_id, "Failing", job))
            self.assertEqual(answer["id"], request_id)
            self.assertFalse(answer["error"]["retryable"])
            self.assertIn("not JSON-serialisable", answer["error"]["message"])
        self.assertEqual(self.program.request(process_request(3, "Failing", "fine")),
                         {"id": 3, "output": "fine"})

    def test_enumerate_must_return_a_list(self):
        for request_id, (returned, type_name) in enumerate(
                (("abc", "str"), (5, "int"), ({"a": 1}, "dict"), (None, "NoneType")), 1):
            answer = self.program.request(enumerate_request(request_id, "BadEnumerate",
                                                            {"return": returned}))
            self.assertFalse(answer["error"]["retryable"], answer)
            self.assertIn("enumerate returned %s" % type_name, answer["error"]["message"])
        self.assertEqual(self.program.request(enumerate_request(9, "BadEnumerate",
                                                                {"return": [1, 2]})),
                         {"id": 9, "jobs": [1, 2]})

    def test_unknown_handler_and_unknown_op(self):
        answer = self.program.request(process_request(1, "Nobody", 1))
        self.assertFalse(answer["error"]["retryable"])
        self.assertIn("no handler named 'Nobody'", answer["error"]["message"])
        # An unknown op is logged, not answered: it might name an outstanding
        # request, as cancel does.
        self.program.send(json.dumps({"id": 2, "op": "frobnicate"}))
        self.program.wait_stderr(lambda line: isinstance(line, str)
                                 and "unknown op 'frobnicate'" in line)
        self.assertEqual(self.program.request(process_request(3, "Echo", 7))["id"], 3)

    def test_malformed_lines_are_logged_and_the_program_goes_on(self):
        self.program.send("this is not JSON")
        self.program.wait_stderr(lambda line: isinstance(line, str) and "not JSON" in line)
        self.program.send("[1, 2, 3]")
        self.program.wait_stderr(lambda line: isinstance(line, str) and "integer id" in line)
        self.program.send('{"op": "process", "handler": "Echo", "job": 1}')
        self.program.wait_stderr(lambda line: isinstance(line, str) and "integer id" in line)
        self.program.send('{"id": "7", "op": "process", "handler": "Echo", "job": 1}')
        self.program.wait_stderr(lambda line: isinstance(line, str) and "integer id" in line)
        self.assertEqual(self.program.request(process_request(8, "Echo", "still here")),
                         {"id": 8, "output": "still here"})
        status, rest = self.program.close()
        self.assertEqual((status, rest), (0, []))

    def _check_cancel(self, handler, cancelled_log):
        self.program.send(process_request(1, handler, None))
        self.program.wait_stderr(lambda line: line == {"id": 1, "log": "started"})
        self.program.send({"id": 1, "op": "cancel", "reason": "timeout"})
        self.program.wait_stderr(lambda line: line == {"id": 1, "log": cancelled_log})
        # The program goes on serving, and never answers the cancelled request.
        self.assertEqual(self.program.request(process_request(2, "Squarer", 3)),
                         {"id": 2, "output": 9})
        self.program.send({"id": 99, "op": "cancel", "reason": "canceled"})  # unknown: ignored
        status, rest = self.program.close()
        self.assertEqual((status, rest), (0, []))

    def test_cancel_a_blocking_request(self):
        self._check_cancel("BlockingWaiter", "saw the cancel: cancelled=True")

    def test_cancel_an_async_request(self):
        self._check_cancel("AsyncWaiter", "task cancelled: cancelled=True")

    def test_printing_becomes_log_lines_tagged_with_the_request(self):
        self.assertEqual(self.program.request(process_request(5, "Printer", None)),
                         {"id": 5, "output": "printed"})
        expected = ["printed by print", "written in two parts", "written to stderr",
                    "INFO logged by logging", "logged by ctx.log"]
        for message in expected:
            self.program.wait_stderr(lambda line: line == {"id": 5, "log": message})
        # A write to file descriptor 1 itself (as C code would do) lands on stderr.
        self.program.wait_stderr(lambda line: line == "written to file descriptor 1")
        status, rest = self.program.close()
        self.assertEqual((status, rest), (0, []))
        self.assertEqual(len(self.program.all_stdout), 2)  # the hello and the one answer

    def test_exits_0_when_stdin_closes_after_finishing_outstanding_work(self):
        self.program.send(process_request(1, "Sleeper", {"i": 1, "ms": 300}))
        self.program.send(process_request(2, "AsyncSleeper", {"i": 2, "ms": 300}))
        status, rest = self.program.close()
        self.assertEqual(status, 0)
        self.assertEqual(sorted(rest, key=lambda answer: answer["id"]),
                         [{"id": 1, "output": 1}, {"id": 2, "output": 2}])


if __name__ == "__main__":
    unittest.main()
