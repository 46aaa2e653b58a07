//! Streamed transfers: files of any size the workspace holds and directories
//! as tar, both ways, through the agent (never the container's host-side
//! paths); hostile archives refused whole; a full workspace or a cut upload
//! leaves nothing behind.

use futures_util::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::*;

const COMMANDS: &str = "sh,echo,cat,ls,sha256sum,find";

fn api(workspace: &str) -> BrigApi {
    BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", COMMANDS),
        ("CONTAINER_WORKSPACE_SIZE", workspace),
        ("CONTAINER_MEM_LIMIT", "512m"),
    ])
}

/// `len` pseudo-random bytes, made chunk by chunk as a stream (never whole).
fn generated(len: usize) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let mut state = 0x9e37_79b9_u32;
    let chunk = 256 * 1024;
    futures_util::stream::iter((0..len).step_by(chunk).map(move |start| {
        let n = chunk.min(len - start);
        Ok((0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect())
    }))
}

fn digest_of(len: usize) -> String {
    let mut hash = Sha256::new();
    let mut state = 0x9e37_79b9_u32;
    for _ in 0..len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        hash.update([state as u8]);
    }
    hex::encode(hash.finalize())
}

async fn put_stream(api: &BrigApi, path: &str, body: reqwest::Body) -> Reply {
    let response = reqwest::Client::new()
        .put(api.url(path))
        .header("x-api-key", ALICE_KEY)
        .body(body)
        .send()
        .await
        .unwrap();
    crate::reply(response).await
}

/// PUTs [`generated`] bytes to `path`, streamed without a length.
async fn put_generated(api: &BrigApi, path: &str, len: usize) -> Reply {
    put_stream(api, path, reqwest::Body::wrap_stream(generated(len))).await
}

/// GETs `path`, hashing the body as it streams; the status, length and hash.
async fn get_hashed(api: &BrigApi, path: &str) -> (StatusCode, usize, String) {
    let response = get(api, path).await;
    let status = response.status();
    let mut stream = response.bytes_stream();
    let (mut len, mut hash) = (0, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        hash.update(&chunk);
    }
    (status, len, hex::encode(hash.finalize()))
}

async fn get_bytes(api: &BrigApi, path: &str) -> (StatusCode, Vec<u8>) {
    let response = get(api, path).await;
    (response.status(), response.bytes().await.unwrap().to_vec())
}

/// GET `path` as alice, the body still to read.
async fn get(api: &BrigApi, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(api.url(path))
        .header("x-api-key", ALICE_KEY)
        .send()
        .await
        .unwrap()
}

fn workspace_listing(out: &serde_json::Value) -> String {
    out["stdout"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_file_round_trips_byte_exact_both_ways() {
    let api = api("256m");
    run(&api, ALICE_KEY, "big", "echo open").await;
    let len = 100 * 1000 * 1000;
    let expected = digest_of(len);
    // Chunked, without a length: streamed into the sandbox.
    let put = put_generated(&api, "/sessions/big/files/data/big.bin", len).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{:?}", put.body);
    let inside = run(&api, ALICE_KEY, "big", "sha256sum data/big.bin").await;
    assert!(workspace_listing(&inside).starts_with(&expected), "{inside}");
    let (status, got_len, got) = get_hashed(&api, "/sessions/big/files/data/big.bin").await;
    assert_eq!((status, got_len, got), (StatusCode::OK, len, expected));
    // A small file with a length still takes the one-frame path, same result.
    let small = put_stream(&api, "/sessions/big/files/small", reqwest::Body::from(vec![5u8; 1000])).await;
    assert_eq!(small.status, StatusCode::NO_CONTENT);
    assert_eq!(get_bytes(&api, "/sessions/big/files/small").await.1, vec![5u8; 1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_workspace_or_cut_short_leaves_nothing() {
    let api = api("16m");
    run(&api, ALICE_KEY, "full", "sh -c 'echo keep > kept'").await;
    let put = put_generated(&api, "/sessions/full/files/huge", 40 << 20).await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", put.body);
    assert_eq!(put.body["error"], "file_too_large");
    assert!(
        put.body["detail"]
            .as_str()
            .unwrap()
            .contains("CONTAINER_WORKSPACE_SIZE"),
        "{:?}",
        put.body
    );
    // A client that goes away midway: its upload is not kept either.
    let cut = generated(8 << 20)
        .take(10)
        .chain(futures_util::stream::iter([Err(std::io::Error::other("client gone"))]));
    let request = reqwest::Client::new()
        .put(api.url("/sessions/full/files/cut"))
        .header("x-api-key", ALICE_KEY)
        .body(reqwest::Body::wrap_stream(cut))
        .send()
        .await;
    assert!(request.is_err() || !request.unwrap().status().is_success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listing = run(&api, ALICE_KEY, "full", "ls -A").await;
        if workspace_listing(&listing) == "kept\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left behind: {listing}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // And the workspace has its space back.
    let fits = put_generated(&api, "/sessions/full/files/fits", 8 << 20).await;
    assert_eq!(fits.status, StatusCode::NO_CONTENT, "{:?}", fits.body);
}

/// A tar of `entries` (path, kind, data, link target), written raw so that
/// hostile names stay as they are.
fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        let old = header.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The entries of a tar: path, kind and content hash, sorted.
fn entries_of(archive: &[u8]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let kind = format!("{:?}", entry.header().entry_type());
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.push((path, kind, format!("{}{link}", hex::encode(Sha256::digest(&data)))));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_tree_round_trips_and_hostile_archives_are_refused_whole() {
    let api = api("128m");
    run(
        &api,
        ALICE_KEY,
        "tree",
        "sh -c 'mkdir -p src/a/b src/empty && echo deep > src/a/b/f && ln -s b/f src/a/l && \
         head -c 3000000 /dev/urandom > src/a/big && mkfifo src/pipe && printf x > \"src/sp ace\"'",
    )
    .await;
    let (status, archive) = get_bytes(&api, "/sessions/tree/archive?path=src").await;
    assert_eq!(status, StatusCode::OK);
    let original = entries_of(&archive);
    let names: Vec<&str> = original.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        names,
        ["a", "a/b", "a/b/f", "a/big", "a/l", "empty", "sp ace"],
        "the FIFO is left out"
    );
    let put = put_stream(
        &api,
        "/sessions/tree/archive?path=copy/here",
        reqwest::Body::from(archive),
    )
    .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{:?}", put.body);
    let (_, again) = get_bytes(&api, "/sessions/tree/archive?path=copy/here").await;
    assert_eq!(entries_of(&again), original, "byte-exact, links as links");
    let same = run(&api, ALICE_KEY, "tree", "sha256sum src/a/big copy/here/a/big").await;
    let listing = workspace_listing(&same);
    let sums: Vec<&str> = listing.lines().map(|l| &l[..64]).collect();
    assert_eq!(sums[0], sums[1]);
    // The whole workspace, and a missing directory.
    assert_eq!(get_bytes(&api, "/sessions/tree/archive").await.0, StatusCode::OK);
    let missing = get_bytes(&api, "/sessions/tree/archive?path=nope").await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);

    for (entries, named) in [
        (
            vec![
                ("fine", tar::EntryType::Regular, &b"x"[..], ""),
                ("../escape", tar::EntryType::Regular, b"x", ""),
            ],
            "../escape",
        ),
        (vec![("/etc/evil", tar::EntryType::Regular, &b"x"[..], "")], "/etc/evil"),
        (vec![("l", tar::EntryType::Symlink, &b""[..], "/etc")], "\"l\""),
        (vec![("d/l", tar::EntryType::Symlink, &b""[..], "../../..")], "d/l"),
        (vec![("h", tar::EntryType::Link, &b""[..], "/etc/passwd")], "\"h\""),
        (vec![("dev", tar::EntryType::Block, &b""[..], "")], "\"dev\""),
        (vec![("p", tar::EntryType::Fifo, &b""[..], "")], "\"p\""),
    ] {
        let put = put_stream(
            &api,
            "/sessions/tree/archive?path=target",
            reqwest::Body::from(tar_of(&entries)),
        )
        .await;
        assert_eq!(
            put.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{entries:?}: {:?}",
            put.body
        );
        assert_eq!(put.body["error"], "invalid_archive");
        let detail = put.body["detail"].as_str().unwrap();
        assert!(detail.contains(named), "{detail}");
    }
    let left = run(&api, ALICE_KEY, "tree", "sh -c 'ls -A target; ls -A /tmp; ls -A'").await;
    assert_eq!(
        workspace_listing(&left),
        "copy\nsrc\ntarget\n",
        "nothing extracted, nothing outside /workspace, no scratch left"
    );
    // More than the workspace holds: 413, nothing kept.
    let api_small = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", COMMANDS),
        ("CONTAINER_WORKSPACE_SIZE", "8m"),
    ]);
    run(&api_small, ALICE_KEY, "s", "echo open").await;
    let too_big = tar_of(&[
        ("a", tar::EntryType::Regular, &vec![1u8; 6 << 20], ""),
        ("b", tar::EntryType::Regular, &vec![2u8; 6 << 20], ""),
    ]);
    let put = put_stream(&api_small, "/sessions/s/archive?path=t", reqwest::Body::from(too_big)).await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", put.body);
    let left = run(&api_small, ALICE_KEY, "s", "ls -A t").await;
    assert_eq!(workspace_listing(&left), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_streams_too_and_strangers_get_404() {
    let redis = RedisServer::start();
    let env = [("REDIS_URL", redis.url()), ("ALLOWED_COMMANDS", COMMANDS.to_string())];
    let first = BrigApi::start(&env_refs(&env));
    let second = BrigApi::start_in(&first.instance, &env_refs(&env));
    run(&first, ALICE_KEY, "shared", "echo open").await;
    let len = 5 << 20;
    let put = put_generated(&second, "/sessions/shared/files/f", len).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{:?}", put.body);
    assert_eq!(
        get_hashed(&first, "/sessions/shared/files/f").await,
        (StatusCode::OK, len, digest_of(len))
    );
    let stranger = reqwest::Client::new()
        .get(first.url("/sessions/shared/archive"))
        .header("x-api-key", BOB_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
}

/// A session deleted while its archive streams out (its container removed
/// under the agent's exec) is a 404, as the session is: not a 503 telling the
/// client to retry (schemathesis found it, racing its own DELETE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_by_the_deletion_of_its_session_is_not_found() {
    // A hundredth of a CPU (an operator's limit; a session cannot ask for
    // less than a tenth): the agent's exec takes a second or more to start.
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("CONTAINER_CPU_LIMIT", "0.01")]);
    let body = serde_json::json!({"session_id": "slow"});
    let created = call(&api, reqwest::Method::POST, "/sessions", ALICE_KEY, Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let archive = {
        let url = api.url("/sessions/slow/archive");
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("x-api-key", ALICE_KEY)
                .send()
                .await
                .map(|reply| reply.status())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let deleted = call(&api, reqwest::Method::DELETE, "/sessions/slow", ALICE_KEY, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(archive.await.unwrap().unwrap(), StatusCode::NOT_FOUND);
}
