//! `POST /mcp`: the JSON-RPC messages an MCP client sends, by hand:
//! initialize, list the tools, call them; authentication as everywhere.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::*;

async fn rpc(api: &BrigApi, key: &str, message: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(api.url("/mcp"))
        .header("x-api-key", key)
        .header("accept", "application/json, text/event-stream")
        .json(&message)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn call_tool(api: &BrigApi, key: &str, id: u64, name: &str, arguments: Value) -> Value {
    let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": name, "arguments": arguments}});
    let (status, body) = rpc(api, key, message).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id);
    body["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_initializes_lists_the_tools_and_calls_them() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", "sh,echo,cat")]);
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "brig-e2e", "version": "1.0"}}});
    let (status, init) = rpc(&api, ALICE_KEY, initialize).await;
    assert_eq!(status, StatusCode::OK, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "brig");
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    let (status, _) = rpc(
        &api,
        ALICE_KEY,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (_, listed) = rpc(
        &api,
        ALICE_KEY,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "create_session",
            "delete_session",
            "execute",
            "list_sessions",
            "read_file",
            "write_file"
        ]
    );
    let execute = tools.iter().find(|t| t["name"] == "execute").unwrap();
    assert_eq!(execute["inputSchema"]["required"], json!(["session_id"]));

    let ran = call_tool(
        &api,
        ALICE_KEY,
        3,
        "execute",
        json!({"session_id": "agent", "command": "sh -c 'echo hi; exit 2'"}),
    )
    .await;
    assert_eq!(ran["isError"], false, "{ran}");
    assert_eq!(ran["structuredContent"]["stdout"], "hi\n");
    assert_eq!(ran["structuredContent"]["exit_code"], 2);

    let written = call_tool(
        &api,
        ALICE_KEY,
        4,
        "write_file",
        json!({"session_id": "agent", "path": "notes/a.txt", "content": "from mcp"}),
    )
    .await;
    assert_eq!(written["isError"], false, "{written}");
    let read = call_tool(
        &api,
        ALICE_KEY,
        5,
        "read_file",
        json!({"session_id": "agent", "path": "notes/a.txt"}),
    )
    .await;
    assert_eq!(read["structuredContent"]["content"], "from mcp");
    let cat = call_tool(
        &api,
        ALICE_KEY,
        6,
        "execute",
        json!({"session_id": "agent", "command": "cat notes/a.txt"}),
    )
    .await;
    assert_eq!(cat["structuredContent"]["stdout"], "from mcp");

    let listed = call_tool(&api, ALICE_KEY, 7, "list_sessions", json!({})).await;
    assert_eq!(listed["structuredContent"]["sessions"], json!(["agent"]));
    // Another principal sees none of it.
    let bobs = call_tool(
        &api,
        BOB_KEY,
        8,
        "read_file",
        json!({"session_id": "agent", "path": "notes/a.txt"}),
    )
    .await;
    assert_eq!(bobs["isError"], true);
    assert_eq!(bobs["structuredContent"]["error"], "not_found");

    // Refusals are tool errors with the API's codes.
    let refused = call_tool(
        &api,
        ALICE_KEY,
        9,
        "execute",
        json!({"session_id": "agent", "command": "id"}),
    )
    .await;
    assert_eq!(refused["isError"], true);
    assert_eq!(refused["structuredContent"]["error"], "command_not_allowed");
    let escape = call_tool(
        &api,
        ALICE_KEY,
        10,
        "read_file",
        json!({"session_id": "agent", "path": "../../etc/passwd"}),
    )
    .await;
    assert_eq!(escape["structuredContent"]["error"], "invalid_path");

    let deleted = call_tool(&api, ALICE_KEY, 11, "delete_session", json!({"session_id": "agent"})).await;
    assert_eq!(deleted["isError"], false);
    assert!(session_containers(&api.instance, "agent").is_empty());

    let (status, body) = rpc(
        &api,
        "wrong-key",
        json!({"jsonrpc": "2.0", "id": 12, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
}
