"""The agent's side of tests/mcp.rs, with the official MCP Python SDK (pinned in
requirements.txt): initialize against runbookd's /mcp, list the tools, diagnose the
cert-mismatch scenario, start a remediation and get its pending approval, then try to approve
it with the agent's token and be refused.

Reads RUNBOOKD_URL and RUNBOOKD_AGENT_TOKEN; prints one JSON object with what it saw; exits
non-zero (with the reason) on the first check that fails.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def check(condition, what):
    if not condition:
        raise SystemExit(f"check failed: {what}")


async def main():
    base = os.environ["RUNBOOKD_URL"]
    token = os.environ["RUNBOOKD_AGENT_TOKEN"]
    headers = {"Authorization": f"Bearer {token}"}
    seen = {}
    timeout = httpx2.Timeout(30.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with streamable_http_client(f"{base}/mcp", http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                seen["server"] = init.server_info.name
                seen["protocol_version"] = init.protocol_version

                tools = (await session.list_tools()).tools
                seen["tools"] = sorted(t.name for t in tools)
                by_name = {t.name: t for t in tools}
                check("diagnose" in by_name, f"diagnose is listed: {seen['tools']}")
                check(
                    by_name["diagnose"].input_schema.get("type") == "object",
                    "tools carry a JSON schema",
                )
                check(
                    len(by_name["start_remediation"].description or "") > 100,
                    "tools carry descriptions written for a model",
                )

                diagnosis = await session.call_tool("diagnose", {})
                check(not diagnosis.is_error, f"diagnose succeeds: {diagnosis.content}")
                seen["cause"] = diagnosis.structured_content["cause"]
                seen["evidence"] = diagnosis.structured_content["evidence"]

                bad = await session.call_tool("get_incident", {"incident_id": "seven"})
                check(bad.is_error, "bad arguments are reported as a tool error")
                seen["bad_arguments_error"] = bad.content[0].text

                started = await session.call_tool("start_remediation", {})
                check(not started.is_error, f"start_remediation succeeds: {started.content}")
                result = started.structured_content
                seen["run_id"] = result["run_id"]
                seen["run_state"] = result["state"]
                seen["pending_approval"] = result["pending_approval"]
                check(result["pending_approval"] is not None, f"a pending approval: {result}")

                pending = await session.call_tool("list_pending_approvals", {})
                seen["pending_ids"] = [a["id"] for a in pending.structured_content["approvals"]]

                try:
                    await session.call_tool("approve", {"approval_id": result["pending_approval"]["id"]})
                    seen["approve_tool"] = "accepted"
                except MCPError as error:
                    seen["approve_tool"] = error.error.message

        approval_id = seen["pending_approval"]["id"]
        refused = await http.post(f"{base}/api/v1/approvals/{approval_id}/approve")
        seen["rest_approve_status"] = refused.status_code
        seen["rest_approve_error"] = refused.json()["error"]["message"]
    print(json.dumps(seen))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit:
        raise
    except BaseException as error:  # report anything else plainly, then fail
        print(f"error: {error!r}", file=sys.stderr)
        raise
