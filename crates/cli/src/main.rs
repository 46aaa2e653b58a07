//! `brig`: the command line of the brig API.
//!
//!   brig exec [-s SESSION] [--timeout S] [--stream] [-i] [-t] -- CMD ARGS...
//!   brig shell [-s SESSION] [--timeout S] [SHELL]
//!   brig sessions [ls | create [ID] | rm ID]
//!   brig files [-s SESSION] [put LOCAL PATH | get PATH [LOCAL] | ls [DIR]]
//!   brig cp SRC DST          (files and directories; one side SESSION:PATH)
//!   brig health
//!   brig mcp                 (MCP over stdio, for clients that start servers)
//!   brig completions SHELL
//!
//! Reads `BRIG_URL` (default `http://localhost:8000`) and `BRIG_API_KEY` or
//! `BRIG_TOKEN` (a JWT). `brig exec` exits with the command's exit code (124 on
//! timeout), its stdout and stderr going to the terminal's own streams; `--json`
//! prints the API's answer instead. Failures of brig itself (the API refused,
//! or could not be reached) exit 125 with the API's error code on stderr.

mod client;
mod copy;
mod mcp;
mod shell;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};

use crate::client::{Client, Failure};

/// Exit code when brig itself fails, as `docker run` does.
const BRIG_FAILED: u8 = 125;

#[derive(Parser)]
#[command(name = "brig", version, about = "Run commands in brig sandboxes")]
struct Cli {
    /// The brig API.
    #[arg(long, env = "BRIG_URL", default_value = "http://localhost:8000", global = true)]
    url: String,
    /// An API key (sent as X-API-Key).
    #[arg(long, env = "BRIG_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// A JWT (sent as Authorization: Bearer), if no API key is given.
    #[arg(long, env = "BRIG_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON answers, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a session (created if needed).
    Exec {
        /// The session.
        #[arg(short, long, env = "BRIG_SESSION", default_value = "cli")]
        session: String,
        /// Deadline in seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Print output as it is produced (Server-Sent Events).
        #[arg(long, conflicts_with = "json")]
        stream: bool,
        /// Working directory inside the sandbox (relative: under /workspace).
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        /// Do not send stdin. Without this, stdin is sent to the command when it
        /// is a pipe or a file (at most 1 MiB of text), never when it is a terminal.
        #[arg(short = 'n', long, conflicts_with = "interactive")]
        no_stdin: bool,
        /// Keep stdin open and stream it to the command as it comes (any
        /// size), its output back as it comes (over a WebSocket).
        #[arg(short, long, conflicts_with_all = ["json", "stream"])]
        interactive: bool,
        /// Run the command under a terminal in the sandbox, sized like this
        /// one (with -i: this terminal goes raw, Ctrl-C reaches the command).
        #[arg(short, long, requires = "interactive")]
        tty: bool,
        /// The command and its arguments (joined with shell quoting, run without a shell).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// An interactive shell in a session (created if needed): `exec -it` of
    /// SHELL (default `sh`). Its deadline is --timeout (the API's
    /// MAX_EXEC_TIMEOUT_SECONDS at most: 300 s by default).
    Shell {
        /// The session.
        #[arg(short, long, env = "BRIG_SESSION", default_value = "cli")]
        session: String,
        /// Deadline in seconds.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        /// The shell to run.
        #[arg(default_value = "sh")]
        shell: String,
    },
    /// List, create or remove sessions.
    Sessions {
        #[command(subcommand)]
        action: Option<SessionsAction>,
    },
    /// Files in a session's /workspace.
    Files {
        /// The session (before or after the action).
        #[arg(short, long, env = "BRIG_SESSION", default_value = "cli", global = true)]
        session: String,
        #[command(subcommand)]
        action: FilesAction,
    },
    /// Copies a file or a directory between here and a session, streamed:
    /// one side is SESSION:PATH (under /workspace), the other a local path
    /// (`-`: stdin or stdout, for a file).
    Cp {
        /// What to copy.
        source: String,
        /// Where to.
        destination: String,
    },
    /// Whether the API is alive and ready (no credentials needed).
    Health,
    /// Serve brig's MCP tools over stdio (one JSON-RPC message per line), for
    /// MCP clients that start their servers as processes.
    Mcp,
    /// Shell completions for bash, zsh, fish, elvish or powershell.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// The caller's sessions (the default).
    Ls,
    /// Creates a session (a random id if none is given).
    Create {
        id: Option<String>,
        /// A host its commands may reach through the sandbox's proxy
        /// (`pypi.org`, `*.example.com`, `host:443`, a CIDR); repeat for more.
        #[arg(long = "allow", value_name = "HOST")]
        allow: Vec<String>,
    },
    /// Removes a session and its sandbox.
    Rm { id: String },
}

#[derive(Subcommand)]
enum FilesAction {
    /// Uploads LOCAL (`-` for stdin) to PATH under /workspace.
    Put { local: String, path: String },
    /// Downloads PATH to LOCAL (stdout if omitted or `-`).
    Get { path: String, local: Option<String> },
    /// Lists DIR under /workspace.
    Ls { dir: Option<String> },
}

/// The API's bound on `stdin`.
const MAX_STDIN_BYTES: u64 = 1 << 20;

/// This process's stdin when it is a pipe or a file (a terminal is never
/// read): at most `MAX_STDIN_BYTES` of UTF-8 text, `None` when empty.
fn piped_stdin() -> Result<Option<String>, Failure> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut data = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|err| Failure::Local(format!("reading stdin: {err}")))?;
    if data.len() as u64 > MAX_STDIN_BYTES {
        return Err(Failure::Local(
            "stdin is larger than 1 MiB, the API's limit: upload it with `brig files put - PATH` instead".into(),
        ));
    }
    if data.is_empty() {
        return Ok(None);
    }
    String::from_utf8(data).map(Some).map_err(|_| {
        Failure::Local("stdin is not UTF-8 text: upload binary data with `brig files put - PATH` instead".into())
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("brig: {failure}");
            ExitCode::from(BRIG_FAILED)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "brig", &mut std::io::stdout());
        return Ok(0);
    }
    let client = Client::new(&cli.url, cli.api_key.as_deref(), cli.token.as_deref())?;
    match cli.command {
        Command::Exec {
            session,
            timeout,
            stream,
            workdir,
            no_stdin,
            interactive,
            tty,
            command,
        } => {
            if interactive {
                let what = shell::Interactive {
                    session: &session,
                    command: shell_words::join(&command),
                    tty,
                    timeout,
                };
                return shell::run(&client, what).await;
            }
            let mut body = json!({"command": shell_words::join(&command), "session_id": session});
            if !no_stdin {
                if let Some(stdin) = piped_stdin()? {
                    body["stdin"] = json!(stdin);
                }
            }
            if let Some(timeout) = timeout {
                body["timeout"] = json!(timeout);
            }
            if let Some(dir) = workdir {
                // Relative, like `docker exec -w`'s users expect: under /workspace.
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("/workspace/{dir}")
                };
                body["working_dir"] = json!(dir);
            }
            let result = if stream && !cli.json {
                client.execute_streaming(&body).await?
            } else {
                let result = client.request(reqwest::Method::POST, "/execute", Some(&body)).await?;
                if cli.json {
                    print_json(&result);
                } else {
                    write_all(&mut std::io::stdout(), result["stdout"].as_str().unwrap_or_default());
                    write_all(&mut std::io::stderr(), result["stderr"].as_str().unwrap_or_default());
                }
                result
            };
            if result["timed_out"] == true && !cli.json {
                let after = timeout.map_or_else(|| "the server's default timeout".to_string(), |t| format!("{t}s"));
                eprintln!(
                    "brig: the command timed out after {after} and was killed (exit 124; --timeout sets the deadline)"
                );
            }
            Ok(result["exit_code"]
                .as_i64()
                .unwrap_or(i64::from(BRIG_FAILED))
                .clamp(0, 255) as u8)
        }
        Command::Shell {
            session,
            timeout,
            shell: program,
        } => {
            let what = shell::Interactive {
                session: &session,
                command: format!("{program} -i"),
                tty: true,
                timeout: Some(timeout),
            };
            shell::run(&client, what).await
        }
        Command::Sessions { action } => {
            match action.unwrap_or(SessionsAction::Ls) {
                SessionsAction::Ls => {
                    let list = client.request(reqwest::Method::GET, "/sessions", None).await?;
                    if cli.json {
                        print_json(&list);
                    } else {
                        for session in list["sessions"].as_array().into_iter().flatten() {
                            println!(
                                "{}\texpires {}",
                                session["session_id"].as_str().unwrap_or_default(),
                                session["expires_at"].as_str().unwrap_or_default()
                            );
                        }
                    }
                }
                SessionsAction::Create { id, allow } => {
                    let mut body = id.map_or_else(|| json!({}), |id| json!({"session_id": id}));
                    if !allow.is_empty() {
                        body["network"] = json!({ "allow": allow });
                    }
                    let (status, created) = client
                        .request_with_status(reqwest::Method::POST, "/sessions", Some(&body))
                        .await?;
                    if cli.json {
                        print_json(&created);
                    } else {
                        let what = if status == reqwest::StatusCode::CREATED {
                            "created"
                        } else {
                            "exists"
                        };
                        println!(
                            "{what}: {} (expires {})",
                            created["session_id"].as_str().unwrap_or_default(),
                            created["expires_at"].as_str().unwrap_or_default()
                        );
                    }
                }
                SessionsAction::Rm { id } => {
                    let path = format!("/sessions/{}", client::path_segment(&id));
                    client.request(reqwest::Method::DELETE, &path, None).await?;
                    if cli.json {
                        print_json(&json!({"session_id": id, "removed": true}));
                    }
                }
            }
            Ok(0)
        }
        Command::Files { session, action } => {
            let base = format!("/sessions/{}/files", client::path_segment(&session));
            match action {
                FilesAction::Put { local, path } => {
                    let data = if local == "-" {
                        let mut data = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)
                            .map_err(|err| Failure::Local(format!("reading stdin: {err}")))?;
                        data
                    } else {
                        std::fs::read(&local).map_err(|err| Failure::Local(format!("{local}: {err}")))?
                    };
                    client
                        .put_file(&format!("{base}/{}", client::file_path(&path)), data)
                        .await?;
                }
                FilesAction::Get { path, local } => {
                    let data = client.get_file(&format!("{base}/{}", client::file_path(&path))).await?;
                    match local.as_deref() {
                        None | Some("-") => {
                            let mut out = std::io::stdout();
                            let _ = out.write_all(&data).and_then(|()| out.flush());
                        }
                        Some(local) => {
                            std::fs::write(local, data).map_err(|err| Failure::Local(format!("{local}: {err}")))?
                        }
                    }
                }
                FilesAction::Ls { dir } => {
                    let query = dir
                        .map(|dir| format!("?dir={}", client::query_value(&dir)))
                        .unwrap_or_default();
                    let listing = client
                        .request(reqwest::Method::GET, &format!("{base}{query}"), None)
                        .await?;
                    if cli.json {
                        print_json(&listing);
                    } else {
                        for entry in listing["entries"].as_array().into_iter().flatten() {
                            println!(
                                "{}\t{}\t{}",
                                entry["type"].as_str().unwrap_or_default(),
                                entry["size"],
                                entry["name"].as_str().unwrap_or_default()
                            );
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Cp { source, destination } => {
            copy::copy(&client, &source, &destination).await?;
            Ok(0)
        }
        Command::Health => {
            let health = client.request(reqwest::Method::GET, "/health", None).await?;
            let ready = client.request(reqwest::Method::GET, "/ready", None).await?;
            if cli.json {
                print_json(&json!({"health": health, "ready": ready}));
            } else {
                println!("ok: alive and ready ({})", ready["store"].as_str().unwrap_or("?"));
            }
            Ok(0)
        }
        Command::Mcp => mcp::bridge(client).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn write_all(out: &mut impl Write, text: &str) {
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
