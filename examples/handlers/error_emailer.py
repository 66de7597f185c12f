"""ErrorEmailer: tell someone that a flow failed.

enumerate  one job carrying the error the flow failed with
process    appends an "email" to out/outbox.txt, outputs {"sent_to": address}

The address is data.notify if the flow has one, else ops@example.com.
Nothing is really sent: out/outbox.txt stands in for a mail server.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from protocol import OUT_DIR, run  # noqa: E402

OUTBOX = os.path.join(OUT_DIR, "outbox.txt")
DEFAULT_RECIPIENT = "ops@example.com"


def enumerate_jobs(request):
    return [{"error": request.get("error")}]


def process(request):
    error = (request.get("job") or {}).get("error") or {}
    recipient = (request.get("data") or {}).get("notify") or DEFAULT_RECIPIENT
    flow_id = request.get("flow_id")
    workflow = request.get("workflow")
    job_id = error.get("job_id", "?")
    if job_id is None:  # the error came from enumerate, not from a job
        job_id = "(none: enumerate failed)"
    # Named after this very job: a redelivered job finds its message already in
    # the outbox and does not send the same email twice.
    message_id = f"<{flow_id}.{request.get('job_id')}@distribot.example>"

    email = "\n".join([
        f"Message-ID: {message_id}",
        f"To: {recipient}",
        f"Subject: [distribot] {workflow} flow {flow_id} failed in phase {error.get('phase', '?')}",
        "",
        f"The {workflow} flow {flow_id} stopped with an error.",
        "",
        f"  phase:    {error.get('phase', '?')}",
        f"  handler:  {error.get('handler', '?')}",
        f"  job id:   {job_id}",
        f"  attempts: {error.get('attempts', '?')}",
        "  message:",
        *(f"    {line}" for line in str(error.get("message", "(no message)")).splitlines()),
        "",
        "-" * 72,
        "",
    ])

    os.makedirs(OUT_DIR, exist_ok=True)
    try:
        with open(OUTBOX, encoding="utf-8") as outbox:
            already_sent = f"Message-ID: {message_id}\n" in outbox.read()
    except FileNotFoundError:
        already_sent = False
    if not already_sent:
        with open(OUTBOX, "a", encoding="utf-8") as outbox:
            outbox.write(email)
    return {"sent_to": recipient}


if __name__ == "__main__":
    run(enumerate=enumerate_jobs, process=process)
