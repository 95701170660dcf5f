"""What the README's `nats` CLI commands show, read with nats-py: a NATS
client that is not ours (the suite runs it against a live stack in
worker/tests/e2e/nats_inspect.rs; an operator can too).

    set -a; . .state/identities/admin.env; set +a
    .state/py/bin/python docs/nats_inspect.py worker-1

Prints one JSON object, a key per README command:
- `stream ls`: every stream's name;
- `stream info INFER_TASKS`: its subjects, retention and storage;
- `consumer ls INFER_TASKS`: the work consumers;
- `kv get --raw INFER_WORKERS <worker>`: the worker's heartbeat, as JSON;
- `micro info jetinfer-worker`: each worker's service info (`$SRV.INFO`)
  and its live counters (`$SRV.STATS`, the endpoint's own data);
- `sub 'infer.task.>' --headers-only`: the headers of the next task batch
  published (send a request meanwhile; it waits up to 30 s).

NATS_URL (default nats://127.0.0.1:4222), NATS_USER and NATS_PASSWORD log in;
only the admin login may read all of it.
"""

import asyncio
import json
import os
import sys

import nats


async def gather(nc, subject, wait=0.5):
    """Every answer to a request on `subject` within `wait` seconds (a
    service's `$SRV` subjects are answered by each of its instances)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    answers = []
    try:
        while True:
            msg = await sub.next_msg(timeout=wait)
            answers.append(json.loads(msg.data))
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return answers


async def main(worker):
    nc = await nats.connect(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(","),
        user=os.environ.get("NATS_USER"),
        password=os.environ.get("NATS_PASSWORD"),
    )
    js = nc.jetstream()
    seen = {}

    seen["stream ls"] = sorted(s.config.name for s in await js.streams_info())
    tasks = await js.stream_info("INFER_TASKS")
    seen["stream info INFER_TASKS"] = {
        "subjects": tasks.config.subjects,
        "retention": str(getattr(tasks.config.retention, "value", tasks.config.retention)),
        "storage": str(getattr(tasks.config.storage, "value", tasks.config.storage)),
        "messages": tasks.state.messages,
    }
    consumers = await js.consumers_info("INFER_TASKS")
    seen["consumer ls INFER_TASKS"] = sorted(c.name for c in consumers)

    workers = await js.key_value("INFER_WORKERS")
    seen[f"kv get --raw INFER_WORKERS {worker}"] = json.loads((await workers.get(worker)).value)

    seen["micro info jetinfer-worker"] = {
        "info": await gather(nc, "$SRV.INFO.jetinfer-worker"),
        "stats": await gather(nc, "$SRV.STATS.jetinfer-worker"),
    }

    sub = await nc.subscribe("infer.task.>")
    await nc.flush()
    print("listening", file=sys.stderr, flush=True)
    msg = await sub.next_msg(timeout=30)
    seen["sub 'infer.task.>' --headers-only"] = {"subject": msg.subject, "headers": msg.headers}
    await nc.close()
    print(json.dumps(seen, indent=1))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "worker-1"))
