//! `warden ctl`: the administrator's client for a running `warden serve`, over
//! its control socket. Human-readable tables by default, `--json` for scripts.
//! Only formatting lives here; the wire format is `crate::control`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::Failure;
use crate::config::{Config, DEFAULT_PATH};
use crate::control::{self, Request};

/// Drive a running warden over its control socket (root or the admin group).
#[derive(Args)]
pub struct CtlArgs {
    /// The service configuration file (to find the control socket).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH, global = true)]
    pub config: PathBuf,
    /// The control socket, instead of the one named in the config.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// Every known plugin with its lifecycle status, runtime state and policy.
    List,
    /// One plugin in detail.
    Status {
        /// The plugin's id (its directory name in plugin_dir).
        id: String,
    },
    /// verified -> installed.
    Install {
        /// The plugin's id.
        id: String,
    },
    /// installed or disabled -> active (starts it).
    Activate {
        /// The plugin's id.
        id: String,
    },
    /// installed or active -> disabled (stops it).
    Disable {
        /// The plugin's id.
        id: String,
    },
    /// Restart an active plugin (also clears `failed` and the restart budget).
    Restart {
        /// The plugin's id.
        id: String,
    },
    /// Show, approve or block a plugin's review policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Permit one older version of a plugin than the highest seen (rollback).
    AllowDowngrade {
        /// The plugin's id.
        id: String,
        /// The older version to accept (semver), e.g. 1.4.2.
        version: String,
    },
    /// Host-call counters (of one plugin, or every plugin and warden itself).
    ///
    /// The call and byte counters are those of the plugin's running instance: they
    /// start from 0 when it starts or restarts, and read 0 while none runs (runtime
    /// backoff, stopped, failed). RESTARTS counts every restart since warden started.
    /// For the whole history, query the audit log (`warden audit query LOG --plugin ID`).
    Stats {
        /// The plugin's id; every plugin when absent.
        id: Option<String>,
    },
    /// Rescan the plugin directory and re-verify every bundle (like SIGHUP).
    Reload,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// The plugin's review status, grants, egress lists and effective capabilities.
    Show {
        /// The plugin's id.
        id: String,
    },
    /// Approve; grants what the manifest declares unless --grant narrows it.
    /// --egress and --allow-address set the plugin's egress policy for net.dial
    /// (docs/policy.md): which host:port patterns it may dial, and which otherwise
    /// forbidden addresses (loopback, private ranges, ...) it may reach anyway.
    Approve {
        /// The plugin's id.
        id: String,
        /// Capabilities to grant, among those the manifest declares, e.g.
        /// kv:read,log:write ("" grants none). Without it: everything declared,
        /// or, when only egress flags are given, the grants it has.
        #[arg(long, value_delimiter = ',', value_name = "CAP,...")]
        grant: Option<Vec<String>>,
        /// host:port patterns, e.g. api.example.com:443,*.example.org:443 ("" clears).
        #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
        egress: Option<Vec<String>>,
        /// Addresses or ranges allowed despite the guard, e.g. 127.0.0.1,10.0.0.0/8.
        #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
        allow_address: Option<Vec<String>>,
    },
    /// Block: every host call of the plugin is denied at once.
    Block {
        /// The plugin's id.
        id: String,
    },
}

pub fn run(a: CtlArgs) -> Result<(), Failure> {
    let socket = match a.socket {
        Some(s) => s,
        None => {
            Config::load(&a.config)
                .map_err(Failure::general)?
                .control_socket
        }
    };
    let req = match a.command {
        CtlCommand::List => Request::List,
        CtlCommand::Status { id } => Request::Status { id },
        CtlCommand::Install { id } => Request::Install { id },
        CtlCommand::Activate { id } => Request::Activate { id },
        CtlCommand::Disable { id } => Request::Disable { id },
        CtlCommand::Restart { id } => Request::Restart { id },
        CtlCommand::Policy { command } => match command {
            PolicyCommand::Show { id } => Request::PolicyShow { id },
            PolicyCommand::Approve {
                id,
                grant,
                egress,
                allow_address,
            } => {
                let clean = |v: Option<Vec<String>>| {
                    v.map(|v| v.into_iter().filter(|s| !s.is_empty()).collect())
                };
                Request::PolicyApprove {
                    id,
                    grant: clean(grant),
                    egress: clean(egress),
                    allow_addresses: clean(allow_address),
                }
            }
            PolicyCommand::Block { id } => Request::PolicyBlock { id },
        },
        CtlCommand::AllowDowngrade { id, version } => Request::AllowDowngrade { id, version },
        CtlCommand::Stats { id } => Request::Stats { id },
        CtlCommand::Reload => Request::Reload,
    };
    let v = control::request(&socket, &req).map_err(Failure::general)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    match &req {
        Request::List => table(
            &[
                "ID", "VERSION", "STATUS", "RUNTIME", "POLICY", "PID", "RESTARTS", "PROBLEM",
            ],
            v.as_array().map(Vec::as_slice).unwrap_or_default(),
            &[
                "id", "version", "status", "runtime", "policy", "pid", "restarts", "problem",
            ],
        ),
        Request::Stats { id: None } => {
            let w = &v["warden"];
            println!(
                "warden: uptime {}s, rss {} KiB, {} plugins ({} running, {} failed)",
                w["uptime_s"], w["rss_kb"], w["plugins"], w["running"], w["failed"]
            );
            table(
                &[
                    "ID", "RUNTIME", "CALLS", "ALLOWED", "DENIED", "LIMITED", "ERRORS", "RESTARTS",
                ],
                v["plugins"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                &[
                    "id",
                    "runtime",
                    "calls",
                    "allowed",
                    "denied",
                    "rate_limited",
                    "errors",
                    "restarts",
                ],
            )
        }
        Request::Reload => {
            let rejected = v["rejected"].as_object().map_or(0, |r| r.len());
            println!("reloaded: {} known, {rejected} rejected", v["plugins"]);
            for (id, why) in v["rejected"].as_object().into_iter().flatten() {
                println!("  {id}: {}", why.as_str().unwrap_or_default());
            }
        }
        _ => pairs(&v),
    }
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn table(headers: &[&str], rows: &[Value], keys: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| keys.iter().map(|k| cell(&r[*k])).collect())
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: Vec<String>| {
        let s: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in cells {
        line(r);
    }
}

fn pairs(v: &Value) {
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let shown = match val {
                Value::Object(_) => val.to_string(),
                other => cell(other),
            };
            println!("{k:<20} {shown}");
        }
    } else {
        println!("{}", cell(v));
    }
}
