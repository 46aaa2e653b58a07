//! `/sessions/{id}/files`: byte-exact round trips through the agent, confined
//! to `/workspace` whatever the tenant plants there.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::*;

/// `method /sessions/{session}/files{suffix}` as `key`, with a raw body.
async fn files(
    api: &BrigApi,
    method: Method,
    key: &str,
    session: &str,
    suffix: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .request(method, api.url(&format!("/sessions/{session}/files{suffix}")))
        .header("x-api-key", key);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

fn error_code(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    value["error"].as_str().unwrap_or_default().to_string()
}

/// Bytes of every value, in an order that is not periodic.
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn hostile_api(env: &[(&str, &str)]) -> BrigApi {
    let mut all = vec![("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", "sh,echo,wc,cat")];
    all.extend_from_slice(env);
    BrigApi::start(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_round_trips_byte_exact_and_is_listed_and_deleted() {
    let api = hostile_api(&[]);
    run(&api, ALICE_KEY, "f", "echo open").await;
    let data = payload(700 * 1024);
    let put = files(
        &api,
        Method::PUT,
        ALICE_KEY,
        "f",
        "/dir/sub/data.bin",
        Some(data.clone()),
    )
    .await;
    assert_eq!(put.0, StatusCode::NO_CONTENT, "{:?}", String::from_utf8_lossy(&put.1));
    let got = files(&api, Method::GET, ALICE_KEY, "f", "/dir/sub/data.bin", None).await;
    assert_eq!(got.0, StatusCode::OK);
    assert!(got.1 == data, "the bytes differ");
    // The command sees the same file, and what a command writes can be fetched.
    let wc = run(
        &api,
        ALICE_KEY,
        "f",
        "sh -c 'wc -c < dir/sub/data.bin; echo made > dir/made.txt'",
    )
    .await;
    assert_eq!(wc["stdout"].as_str().unwrap().trim(), (700 * 1024).to_string());
    assert_eq!(
        files(&api, Method::GET, ALICE_KEY, "f", "/dir/made.txt", None).await.1,
        b"made\n"
    );

    let listing = files(&api, Method::GET, ALICE_KEY, "f", "?dir=dir", None).await;
    let listing: serde_json::Value = serde_json::from_slice(&listing.1).unwrap();
    assert_eq!(
        listing,
        serde_json::json!({"dir": "dir", "truncated": false, "entries": [
            {"name": "made.txt", "type": "file", "size": 5},
            {"name": "sub", "type": "directory", "size": 0},
        ]})
    );
    let root = files(&api, Method::GET, ALICE_KEY, "f", "", None).await;
    assert!(
        String::from_utf8_lossy(&root.1).contains("\"name\":\"dir\""),
        "{root:?}"
    );

    assert_eq!(
        files(&api, Method::DELETE, ALICE_KEY, "f", "/dir/sub/data.bin", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let gone = files(&api, Method::GET, ALICE_KEY, "f", "/dir/sub/data.bin", None).await;
    assert_eq!(
        (gone.0, error_code(&gone.1)),
        (StatusCode::NOT_FOUND, "file_not_found".into())
    );
    let not_empty = files(&api, Method::DELETE, ALICE_KEY, "f", "/dir", None).await;
    assert_eq!(
        (not_empty.0, error_code(&not_empty.1)),
        (StatusCode::CONFLICT, "file_refused".into())
    );

    // Someone else's session, or none at all: not found, and nothing written.
    for (key, session) in [(BOB_KEY, "f"), (ALICE_KEY, "nope")] {
        let put = files(&api, Method::PUT, key, session, "/x", Some(b"x".to_vec())).await;
        assert_eq!((put.0, error_code(&put.1)), (StatusCode::NOT_FOUND, "not_found".into()));
        let get = files(&api, Method::GET, key, session, "/dir/made.txt", None).await;
        assert_eq!(get.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_escapes_symlinks_and_fifos_are_refused_on_both_paths() {
    let api = hostile_api(&[]);
    run(
        &api,
        ALICE_KEY,
        "h",
        "sh -c 'ln -s /proc/1 p; ln -s /etc/passwd pw; ln -s / root; mkdir d; ln -s .. d/up; mkfifo fifo; \
         dd if=/dev/zero of=big bs=1M count=2 2>/dev/null'",
    )
    .await;
    for suffix in [
        "/..%2F..%2Fproc%2F1%2Fenviron",
        "/d%2F..%2F..%2Fetc%2Fpasswd",
        "/.%2Fpw",
        "/a%2F%2Fb",
        "/%2Fetc%2Fpasswd",
        "?dir=..",
        "?dir=%2Fetc",
    ] {
        let reply = files(&api, Method::GET, ALICE_KEY, "h", suffix, None).await;
        assert_eq!(
            reply.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{suffix}: {:?}",
            String::from_utf8_lossy(&reply.1)
        );
        assert_eq!(error_code(&reply.1), "invalid_path", "{suffix}");
    }
    for suffix in [
        "/pw",
        "/p/environ",
        "/root/etc/passwd",
        "/d/up/pw",
        "/fifo",
        "?dir=root",
        "?dir=d/up",
    ] {
        let started = Instant::now();
        let reply = files(&api, Method::GET, ALICE_KEY, "h", suffix, None).await;
        assert_eq!(
            reply.0,
            StatusCode::CONFLICT,
            "{suffix}: {:?}",
            String::from_utf8_lossy(&reply.1)
        );
        assert_eq!(error_code(&reply.1), "file_refused");
        assert!(started.elapsed() < Duration::from_secs(5), "{suffix} was slow");
    }
    for suffix in ["/pw", "/root/tmp/planted", "/d/up/planted", "/fifo"] {
        let reply = files(&api, Method::PUT, ALICE_KEY, "h", suffix, Some(b"planted".to_vec())).await;
        assert_eq!(
            reply.0,
            StatusCode::CONFLICT,
            "{suffix}: {:?}",
            String::from_utf8_lossy(&reply.1)
        );
    }
    let planted = run(
        &api,
        ALICE_KEY,
        "h",
        "sh -c 'cat /tmp/planted planted; head -c 4 /etc/passwd'",
    )
    .await;
    assert_eq!(planted["stdout"], "root", "{planted}");

    // Past one frame: streamed, and refused the same way.
    let big = files(&api, Method::GET, ALICE_KEY, "h", "/big", None).await;
    assert_eq!(big.0, StatusCode::OK);
    assert!(big.1.len() == 2 << 20 && big.1.iter().all(|b| *b == 0));
    for suffix in ["/pw", "/root/tmp/planted", "/d/up/planted", "/fifo", "/d"] {
        let reply = files(&api, Method::PUT, ALICE_KEY, "h", suffix, Some(vec![1; (1 << 20) + 1])).await;
        assert_eq!(
            (reply.0, error_code(&reply.1)),
            (StatusCode::CONFLICT, "file_refused".into()),
            "{suffix}: {:?}",
            String::from_utf8_lossy(&reply.1)
        );
    }
    let upload = files(
        &api,
        Method::PUT,
        ALICE_KEY,
        "h",
        "/upload",
        Some(vec![0; (1 << 20) + 1]),
    )
    .await;
    assert_eq!(upload.0, StatusCode::NO_CONTENT);
    // The agent is still fine.
    assert_eq!(run(&api, ALICE_KEY, "h", "echo alive").await["stdout"], "alive\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_work_through_a_replica_that_does_not_hold_the_channel() {
    let redis = RedisServer::start();
    let env = [("REDIS_URL", redis.url()), ("ALLOWED_COMMANDS", "sh,echo".to_string())];
    let first = BrigApi::start(&env_refs(&env));
    let second = BrigApi::start_in(&first.instance, &env_refs(&env));
    run(&first, ALICE_KEY, "shared", "echo open").await;
    let data = payload(300 * 1024);
    let put = files(
        &second,
        Method::PUT,
        ALICE_KEY,
        "shared",
        "/via-second",
        Some(data.clone()),
    )
    .await;
    assert_eq!(put.0, StatusCode::NO_CONTENT, "{:?}", String::from_utf8_lossy(&put.1));
    assert!(
        files(&first, Method::GET, ALICE_KEY, "shared", "/via-second", None)
            .await
            .1
            == data
    );
    assert!(
        files(&second, Method::GET, ALICE_KEY, "shared", "/via-second", None)
            .await
            .1
            == data
    );
    let pw = files(&second, Method::GET, ALICE_KEY, "shared", "/missing", None).await;
    assert_eq!(pw.0, StatusCode::NOT_FOUND);
}

/// Red team L1: 3,000 names of 255 bytes that are not UTF-8. Listing them
/// answers (cut, and saying so) instead of crashing the agent, and the
/// session keeps its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_huge_invalid_names_is_listed_cut_and_the_session_survives() {
    let api = hostile_api(&[]);
    run(&api, ALICE_KEY, "bad", "echo open").await;
    let (status, _) = files(&api, Method::PUT, ALICE_KEY, "bad", "/keep.txt", Some(b"kept".to_vec())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let script = "p=$(printf \"\\377%.0s\" $(seq 250)); mkdir d; i=0; \
                  while [ $i -lt 3000 ]; do : > \"d/$p$i\"; i=$((i+1)); done; ls d | wc -l";
    let body = serde_json::json!({"command": format!("sh -c '{script}'"), "session_id": "bad", "timeout": 60});
    let made = call(&api, Method::POST, "/execute", ALICE_KEY, Some(body)).await;
    assert_eq!(made.body["stdout"], "3000\n", "{:?}", made.body);
    let (status, listing) = files(&api, Method::GET, ALICE_KEY, "bad", "?dir=d", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&listing[..listing.len().min(300)])
    );
    let listing: serde_json::Value = serde_json::from_slice(&listing).unwrap();
    assert_eq!(listing["truncated"], true);
    let entries = listing["entries"].as_array().unwrap();
    assert!(
        entries.len() > 1000 && entries.len() < 3000,
        "{} entries",
        entries.len()
    );
    let (status, kept) = files(&api, Method::GET, ALICE_KEY, "bad", "/keep.txt", None).await;
    assert_eq!((status, kept.as_slice()), (StatusCode::OK, b"kept".as_slice()));
}
