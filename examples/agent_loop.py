"""A tool-calling agent loop: an OpenAI-compatible model drives a brig sandbox.

    export BRIG_URL=http://localhost:8000 BRIG_API_KEY=...            # brig
    export OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=... MODEL=gpt-4o-mini
    PYTHONPATH=clients/python/src python3 examples/agent_loop.py "How many primes are below 10000?"

The model gets two tools, ``run_command`` (a command line) and ``run_python``
(code in a context whose variables persist), each run in one session that
lives as long as the loop. Any OpenAI-compatible endpoint works (vLLM, Ollama:
``http://localhost:11434/v1``). The model's requests are untrusted input: the
sandbox is the boundary, and what it prints goes back to the model capped.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

import httpx

import brig

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run_command",
            "description": "Run a command line in a Linux sandbox (no shell unless you call sh -c). Returns exit code, stdout, stderr.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_python",
            "description": "Run Python code; variables persist between calls. Returns stdout, stderr, the last expression's value, any error.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}},
                "required": ["code"],
            },
        },
    },
]

MAX_TOOL_OUTPUT = 8000
MAX_TURNS = 10


def capped(text: str) -> str:
    return text if len(text) <= MAX_TOOL_OUTPUT else text[:MAX_TOOL_OUTPUT] + "\n[... cut]"


def call_tool(session: brig.Session, name: str, arguments: str) -> str:
    try:
        args = json.loads(arguments or "{}")
        if name == "run_command":
            result = session.run(str(args["command"]), timeout=60)
            return json.dumps(
                {"exit_code": result.exit_code, "stdout": capped(result.stdout), "stderr": capped(result.stderr)}
            )
        if name == "run_python":
            cell = session.run_code(str(args["code"]), timeout=60)
            error = None if cell.error is None else f"{cell.error.name}: {cell.error.message}"
            return json.dumps(
                {"stdout": capped(cell.stdout), "stderr": capped(cell.stderr), "result": cell.result, "error": error}
            )
        return json.dumps({"error": f"no tool named {name}"})
    except (brig.BrigError, KeyError, ValueError) as err:
        # The model sees what went wrong and may try something else.
        return json.dumps({"error": str(err)})


def agent(task: str, llm: httpx.Client, model: str, session: brig.Session) -> str:
    messages: List[Dict[str, Any]] = [
        {"role": "system", "content": "You solve tasks by running code in a sandbox with the tools given. Answer briefly."},
        {"role": "user", "content": task},
    ]
    for _ in range(MAX_TURNS):
        reply = llm.post("/chat/completions", json={"model": model, "messages": messages, "tools": TOOLS})
        reply.raise_for_status()
        message: Dict[str, Any] = reply.json()["choices"][0]["message"]
        messages.append(message)
        calls = message.get("tool_calls") or []
        if not calls:
            return str(message.get("content") or "")
        for call in calls:
            function = call["function"]
            print(f"[{function['name']}] {function.get('arguments', '')}", file=sys.stderr)
            output = call_tool(session, function["name"], function.get("arguments", ""))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    return f"(gave up after {MAX_TURNS} turns)"


def main() -> None:
    task = " ".join(sys.argv[1:]) or "What is the kernel version of the sandbox, and how many CPUs does it see?"
    base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"}
    model = os.environ.get("MODEL", "gpt-4o-mini")
    with httpx.Client(base_url=base, headers=headers, timeout=120) as llm, brig.Client() as client:
        with client.session() as session:
            print(agent(task, llm, model, session))


if __name__ == "__main__":
    main()
