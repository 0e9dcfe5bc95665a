"""The agent's side of tests/mcp.rs as a LangGraph agent runs it: mcp 1.x with LangChain's MCP
adapters (pinned in requirements-langchain.txt). `MultiServerMCPClient(...).get_tools()` over
streamable HTTP with the agent's bearer header, then each tool through `ainvoke` with a tool
call, as an agent's tool node does: list_incidents, diagnose (the cert-mismatch scenario),
start_remediation up to its pending approval; then the approval is attempted and refused, both
as an MCP tool call and on the REST API with the agent's token.

Reads RUNBOOKD_URL and RUNBOOKD_AGENT_TOKEN; prints one JSON object with what it saw; exits
non-zero (with the reason) on the first check that fails.
"""

import asyncio
import json
import os
import sys

import httpx
from langchain_mcp_adapters.client import MultiServerMCPClient
from mcp.shared.exceptions import McpError


def check(condition, what):
    if not condition:
        raise SystemExit(f"check failed: {what}")


async def invoke(tool, arguments, call_id):
    """Calls `tool` as an agent's tool node does; the ToolMessage's status and structured result."""
    message = await tool.ainvoke(
        {"type": "tool_call", "id": call_id, "name": tool.name, "args": arguments}
    )
    structured = (message.artifact or {}).get("structured_content")
    return message.status, structured, message.content


async def main():
    base = os.environ["RUNBOOKD_URL"]
    token = os.environ["RUNBOOKD_AGENT_TOKEN"]
    headers = {"Authorization": f"Bearer {token}"}
    client = MultiServerMCPClient(
        {
            "runbookd": {
                "transport": "streamable_http",
                "url": f"{base}/mcp",
                "headers": headers,
                "timeout": 30,
            }
        }
    )
    seen = {}
    tools = {tool.name: tool for tool in await client.get_tools()}
    seen["tools"] = sorted(tools)
    check(
        tools["diagnose"].args_schema.get("type") == "object",
        "tools carry a JSON schema",
    )

    status, listed, _ = await invoke(tools["list_incidents"], {}, "call-1")
    check(status == "success", f"list_incidents succeeds: {listed}")
    seen["incidents"] = listed["incidents"]

    status, diagnosis, content = await invoke(tools["diagnose"], {}, "call-2")
    check(status == "success", f"diagnose succeeds: {content}")
    seen["cause"] = diagnosis["cause"]
    seen["evidence"] = diagnosis["evidence"]

    status, _, content = await invoke(tools["get_incident"], {"incident_id": "seven"}, "call-3")
    check(status == "error", "bad arguments come back as a tool error the model can read")
    seen["bad_arguments_error"] = json.dumps(content)

    status, started, content = await invoke(tools["start_remediation"], {}, "call-4")
    check(status == "success", f"start_remediation succeeds: {content}")
    seen["run_id"] = started["run_id"]
    seen["run_state"] = started["state"]
    seen["pending_approval"] = started["pending_approval"]
    check(started["pending_approval"] is not None, f"a pending approval: {started}")
    approval_id = started["pending_approval"]["id"]

    status, pending, _ = await invoke(tools["list_pending_approvals"], {}, "call-5")
    seen["pending_ids"] = [a["id"] for a in pending["approvals"]]

    # No tool approves: the agent's MCP session cannot, whatever it sends.
    async with client.session("runbookd") as session:
        try:
            await session.call_tool("approve", {"approval_id": approval_id})
            seen["approve_tool"] = "accepted"
        except McpError as error:
            seen["approve_tool"] = error.error.message

    async with httpx.AsyncClient(headers=headers, timeout=30.0) as http:
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
