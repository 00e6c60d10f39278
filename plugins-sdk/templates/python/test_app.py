"""The tool's logic and schema, natively: `python3 -m unittest`."""

import json
import unittest

import app  # noqa: F401  (registers the tools)
import autoglm


class GreetTest(unittest.TestCase):
    def test_greets(self):
        self.assertEqual(json.loads(autoglm.call("greet", '{"name": "Ada", "excited": true}')), {"greeting": "Hello, Ada!"})

    def test_schema_comes_from_the_type_hints(self):
        schema = autoglm.specs()[0]["schema"]
        self.assertEqual(schema["properties"], {"name": {"type": "string"}, "excited": {"type": "boolean"}})
        self.assertEqual(schema["required"], ["name"])

    def test_bad_arguments_are_invalid(self):
        for args in ('{"name": " "}', '{}', '{"name": 3}', '{"name": "x", "extra": 1}', "not json"):
            with self.assertRaises(autoglm.InvalidArguments, msg=args):
                autoglm.call("greet", args)


class WorkTest(unittest.TestCase):
    def test_reports_progress_and_the_context(self):
        autoglm.reported.clear()
        worked = json.loads(autoglm.call("work", '{"steps": 2}'))
        self.assertEqual(worked["idempotency_key"], "native")
        self.assertEqual(autoglm.reported, [(1, 2, "step 1"), (2, 2, "step 2")])


if __name__ == "__main__":
    unittest.main()
