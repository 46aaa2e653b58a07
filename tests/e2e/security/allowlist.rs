//! The allowlist: a table of bypass attempts, each with its expected outcome.
//! argv[0] is checked exactly and the argv checked is the argv run: `echo`
//! shows what the agent received.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

/// What must happen to a command.
enum Expect {
    /// 403 command_not_allowed.
    Forbidden,
    /// 422 invalid_command.
    Invalid,
    /// 200, and the program printed exactly this (so nothing else ran).
    Ran(&'static str),
}

const TABLE: &[(&str, Expect)] = &[
    ("id", Expect::Forbidden),
    ("ls;id", Expect::Forbidden),
    ("ls&&id", Expect::Forbidden),
    ("ls|id", Expect::Forbidden),
    ("echo a;id", Expect::Ran("a;id\n")),
    ("echo a ; id", Expect::Ran("a ; id\n")),
    ("echo a && id", Expect::Ran("a && id\n")),
    ("echo a | id", Expect::Ran("a | id\n")),
    ("echo a > /tmp/x", Expect::Ran("a > /tmp/x\n")),
    ("echo $(id)", Expect::Ran("$(id)\n")),
    ("echo `id`", Expect::Ran("`id`\n")),
    ("echo ${PATH}", Expect::Ran("${PATH}\n")),
    ("$(id)", Expect::Forbidden),
    ("`id`", Expect::Forbidden),
    ("'i'd", Expect::Forbidden),
    ("i\"\"d", Expect::Forbidden),
    ("\\id", Expect::Forbidden),
    ("/bin/id", Expect::Forbidden),
    ("./id", Expect::Forbidden),
    ("/bin/echo hi", Expect::Forbidden),
    ("env id", Expect::Forbidden),
    ("timeout 1 id", Expect::Forbidden),
    ("xargs id", Expect::Forbidden),
    ("busybox id", Expect::Forbidden),
    ("sh -c id", Expect::Forbidden),
    ("FOO=1 id", Expect::Forbidden),
    ("FOO=1 echo hi", Expect::Forbidden),
    ("ECHO hi", Expect::Forbidden),
    ("ｅｃｈｏ hi", Expect::Forbidden),
    ("echo\u{200b} hi", Expect::Forbidden),
    ("   echo leading", Expect::Ran("leading\n")),
    ("echo 'quoted; id'", Expect::Ran("quoted; id\n")),
    ("echo a\nid", Expect::Invalid),
    ("echo a\rid", Expect::Invalid),
    ("echo\tid", Expect::Invalid),
    ("echo a\u{0}id", Expect::Invalid),
    ("echo 'unterminated", Expect::Invalid),
    ("", Expect::Invalid),
    ("''", Expect::Invalid),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bypass_string_gets_its_expected_outcome() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", "echo,ls,cat")]);
    for (command, expect) in TABLE {
        let body = json!({"command": command, "session_id": "allowlist"});
        let reply = call(&api, Method::POST, "/execute", ALICE_KEY, Some(body)).await;
        match expect {
            Expect::Forbidden => {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{command:?}: {:?}", reply.body);
                assert_eq!(reply.body["error"], "command_not_allowed");
            }
            Expect::Invalid => {
                assert_eq!(
                    reply.status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{command:?}: {:?}",
                    reply.body
                );
                assert_eq!(reply.body["error"], "invalid_command");
            }
            Expect::Ran(stdout) => {
                assert_eq!(reply.status, StatusCode::OK, "{command:?}: {:?}", reply.body);
                assert_eq!(reply.body["stdout"], *stdout, "{command:?}");
            }
        }
    }
    // And the audit trail records exactly the argv that ran.
    let logs = api.logs().join("\n");
    assert!(
        logs.contains(r#""argv":"[\"echo\",\"$(id)\"]""#),
        "audit lacks the checked argv"
    );
}
