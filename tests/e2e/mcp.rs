//! `POST /mcp`: the JSON-RPC messages an MCP client sends, by hand:
//! initialize, list the tools, call them; authentication as everywhere.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::*;

pub(crate) async fn rpc(api: &BrigApi, key: &str, message: Value) -> (StatusCode, Value) {
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

pub(crate) async fn call_tool(api: &BrigApi, key: &str, id: u64, name: &str, arguments: Value) -> Value {
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
            "run_code",
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
    // Like execute, write_file creates the session it names.
    let fresh = call_tool(
        &api,
        ALICE_KEY,
        40,
        "write_file",
        json!({"session_id": "scratch", "path": "main.sh", "content": "echo made"}),
    )
    .await;
    assert_eq!(fresh["isError"], false, "{fresh}");
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

    // The shapes of GET /sessions.
    let listed = call_tool(&api, ALICE_KEY, 7, "list_sessions", json!({})).await;
    let http = call(&api, reqwest::Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(listed["structuredContent"], http.body, "{listed}");
    let mut ids: Vec<&str> = http.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["agent", "scratch"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_problems_are_json_rpc_errors_and_json_only_clients_are_served() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("MAX_REQUEST_BYTES", "4096")]);
    let json_type = ("content-type", "application/json");
    // Red team L7: /mcp read bodies past MAX_REQUEST_BYTES.
    let big = format!(
        r#"{{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {{"pad": "{}"}}}}"#,
        "x".repeat(5000)
    );
    let list = r#"{"jsonrpc": "2.0", "id": 7, "method": "tools/list"}"#;
    // Method, headers, body → HTTP status and JSON-RPC error code.
    type Case<'a> = (reqwest::Method, Vec<(&'a str, &'a str)>, &'a str, u16, i64);
    let cases: [Case; 6] = [
        (
            reqwest::Method::POST,
            vec![json_type],
            r#"{"jsonrpc": "2.0", "id": "#,
            400,
            -32700,
        ),
        (
            reqwest::Method::POST,
            vec![json_type],
            r#"{"hello": "world"}"#,
            400,
            -32600,
        ),
        (
            reqwest::Method::POST,
            vec![("content-type", "text/plain")],
            list,
            415,
            -32600,
        ),
        (
            reqwest::Method::POST,
            vec![json_type, ("accept", "text/html")],
            list,
            406,
            -32600,
        ),
        (
            reqwest::Method::GET,
            vec![("accept", "text/event-stream")],
            "",
            405,
            -32600,
        ),
        (reqwest::Method::POST, vec![json_type], &big, 413, -32600),
    ];
    for (method, headers, body, status, code) in cases {
        let mut request = reqwest::Client::new()
            .request(method.clone(), api.url("/mcp"))
            .header("x-api-key", ALICE_KEY)
            .body(body.to_string());
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {headers:?} {body}");
        if status == 405 {
            assert_eq!(response.headers()["allow"], "POST");
        }
        assert_eq!(response.headers()["content-type"], "application/json");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["jsonrpc"], "2.0", "{error}");
        assert_eq!(error["error"]["code"], code, "{error}");
        assert!(
            error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    // A client that lists only application/json, or nothing, is answered.
    for accept in [Some("application/json"), None] {
        let mut request = reqwest::Client::new()
            .post(api.url("/mcp"))
            .header("x-api-key", ALICE_KEY)
            .header("content-type", "application/json")
            .body(list);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "Accept: {accept:?}");
        let listed: Value = response.json().await.unwrap();
        assert_eq!(listed["id"], 7);
        assert!(
            listed["result"]["tools"].as_array().is_some_and(|t| t.len() == 7),
            "{listed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_is_offered_where_it_runs_and_a_session_can_choose_its_image() {
    const PYTHON_IMAGE: &str = "brig-sandbox-python:latest";
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,python3"),
        ("LANGUAGES", "python=python3 -,sh=sh -s,ruby=ruby -"),
        ("ALLOWED_IMAGES", PYTHON_IMAGE),
    ]);
    let (_, listed) = rpc(
        &api,
        ALICE_KEY,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    let execute = tools.iter().find(|t| t["name"] == "execute").unwrap();
    // ruby is configured but its interpreter is not allowed: not offered.
    assert_eq!(
        execute["inputSchema"]["properties"]["language"]["enum"],
        json!(["python", "sh", null]),
        "{execute}"
    );
    let create = tools.iter().find(|t| t["name"] == "create_session").unwrap();
    assert!(create["inputSchema"]["properties"]["image"].is_object(), "{create}");

    let created = call_tool(
        &api,
        ALICE_KEY,
        2,
        "create_session",
        json!({"session_id": "py", "image": PYTHON_IMAGE}),
    )
    .await;
    assert_eq!(created["isError"], false, "{created}");
    let session = &created["structuredContent"];
    assert_eq!(session["image"], PYTHON_IMAGE);
    assert_eq!(session["created"], true);
    let (created_at, expires_at) = (
        session["created_at"].as_str().unwrap(),
        session["expires_at"].as_str().unwrap(),
    );
    assert!(expires_at > created_at, "{session}");

    let ran = call_tool(
        &api,
        ALICE_KEY,
        3,
        "execute",
        json!({"session_id": "py", "code": "print(6*7)", "language": "python"}),
    )
    .await;
    assert_eq!(ran["structuredContent"]["stdout"], "42\n", "{ran}");
    // run_code: a context whose variables the next call, given its id, still has.
    let first = call_tool(
        &api,
        ALICE_KEY,
        5,
        "run_code",
        json!({"session_id": "py", "code": "x = 41"}),
    )
    .await;
    assert_eq!(first["isError"], false, "{first}");
    let context = first["structuredContent"]["context_id"].as_str().unwrap().to_string();
    let second = call_tool(
        &api,
        ALICE_KEY,
        6,
        "run_code",
        json!({"session_id": "py", "code": "x + 1", "context_id": context}),
    )
    .await;
    assert_eq!(second["structuredContent"]["result"], "42", "{second}");
    let foreign = call_tool(
        &api,
        BOB_KEY,
        7,
        "run_code",
        json!({"session_id": "py", "code": "x", "context_id": context}),
    )
    .await;
    assert_eq!(foreign["structuredContent"]["error"], "not_found", "{foreign}");
    let other = call_tool(
        &api,
        ALICE_KEY,
        4,
        "create_session",
        json!({"session_id": "other", "image": "not-allowed:latest"}),
    )
    .await;
    assert_eq!(other["isError"], true);
    assert_eq!(other["structuredContent"]["error"], "image_not_allowed");
}

/// What the official MCP Python SDK (`mcp`, installed by scripts/test.sh into
/// target/schemathesis) sees through `transport`: the tool names and the
/// output of one `execute`.
const SDK_CLIENT: &str = r#"
import asyncio, json, sys
import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

async def use(read, write):
    async with ClientSession(read, write) as session:
        await session.initialize()
        tools = sorted(tool.name for tool in (await session.list_tools()).tools)
        ran = await session.call_tool("execute", {"session_id": "sdk", "command": "echo from the sdk"})
        refused = await session.call_tool("execute", {"session_id": "sdk", "command": "id"})
        return {"tools": tools, "stdout": ran.structuredContent["stdout"], "error": ran.isError,
                "refused": refused.isError, "refused_code": (refused.structuredContent or {}).get("error")}

async def main(transport, url, key, brig):
    if transport == "http":
        # An API key as a bearer token: what many MCP clients can send.
        headers = {"Authorization": "Bearer " + key}
        async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=60)) as http:
            async with streamable_http_client(url + "/mcp", http_client=http) as (r, w, _):
                print(json.dumps(await use(r, w)))
    else:
        server = StdioServerParameters(command=brig, args=["mcp"], env={"BRIG_URL": url, "BRIG_API_KEY": key})
        async with stdio_client(server) as (r, w):
            print(json.dumps(await use(r, w)))

asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), 60))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_over_http_and_through_brig_mcp() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = repo.join("target/schemathesis/bin/python");
    assert!(
        python.exists(),
        "no venv at {}: scripts/test.sh makes it and installs the MCP SDK",
        python.display()
    );
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", "echo")]);
    for transport in ["http", "stdio"] {
        // Blocking is fine here: the server is another process.
        let out = std::process::Command::new(&python)
            .args(["-c", SDK_CLIENT, transport, &api.base, ALICE_KEY])
            .arg(binary("brig"))
            .output()
            .expect("run the SDK client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{transport}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("{err}: {stdout}"));
        assert_eq!(
            seen["tools"],
            json!([
                "create_session",
                "delete_session",
                "execute",
                "list_sessions",
                "read_file",
                "run_code",
                "write_file"
            ]),
            "{transport}"
        );
        assert_eq!(seen["stdout"], "from the sdk\n", "{transport}: {seen}");
        assert_eq!(seen["error"], false, "{transport}");
        assert_eq!(seen["refused"], true, "{transport}");
        assert_eq!(seen["refused_code"], "command_not_allowed", "{transport}");
    }
}
