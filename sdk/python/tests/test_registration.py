"""Registration mistakes are raised where they are made, before any hello."""

import unittest

import distribot
from tests.harness import Program


class RegistrationTest(unittest.TestCase):
    def test_registering_a_name_twice_is_an_error(self):
        @distribot.handler("RegisteredTwice", version="1.0.0")
        def first(ctx, job):
            return None

        with self.assertRaises(ValueError) as raised:
            @distribot.handler("RegisteredTwice", version="2.0.0")
            class Second:
                def process(self, ctx, job):
                    return None
        message = str(raised.exception)
        self.assertIn("'RegisteredTwice' is registered twice", message)
        self.assertIn("first", message)
        self.assertIn("Second", message)

    def test_a_program_registering_a_name_twice_fails_before_its_hello(self):
        program = Program("duplicate.py")
        self.addCleanup(program.kill)
        status, answers = program.close()
        self.assertNotEqual(status, 0)
        self.assertEqual(answers, [])
        self.assertIn("'Twice' is registered twice", "".join(program.all_stderr))

    def test_versions_are_checked_and_normalised(self):
        for bad in ("1", "1.2.3.4", "v1.2.3", "01.2.3", "1.2.x", "", 1.2, None):
            with self.assertRaises(ValueError, msg=repr(bad)) as raised:
                distribot.handler("BadVersion", version=bad)
            self.assertIn("MAJOR.MINOR.PATCH", str(raised.exception))

        def noop(ctx, job):
            return None
        self.assertIs(distribot.handler("ShortVersion", version="3.4")(noop), noop)
        from distribot._handlers import registered_handlers
        versions = {entry.name: entry.version for entry in registered_handlers()}
        self.assertEqual(versions["ShortVersion"], "3.4.0")

    def test_a_class_with_nothing_to_run_is_refused(self):
        with self.assertRaises(TypeError) as raised:
            @distribot.handler("Empty", version="1.0.0")
            class Empty:
                def proces(self, ctx, job):  # misspelt
                    return None
        self.assertIn("neither enumerate", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
