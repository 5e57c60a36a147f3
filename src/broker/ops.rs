//! The closed table of host-call ops: each op's name, the capability it needs and
//! who serves it. An op whose provider is not built yet answers `unavailable`.

use crate::bundle::Capability;

/// Who serves an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    KvGet,
    KvPut,
    KvDelete,
    KvList,
    Log,
    MonitorStats,
    AuditQuery,
    NetDial,
    FsOpen,
    /// Known, but nothing serves it in this warden; the text names what is missing.
    Unavailable(&'static str),
}

/// One op.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub name: &'static str,
    pub capability: Capability,
    pub provider: Provider,
}

const fn op(name: &'static str, capability: Capability, provider: Provider) -> Op {
    Op {
        name,
        capability,
        provider,
    }
}

use Capability as C;
use Provider as P;

/// Every op warden knows, in the order of docs/protocol.md.
pub const OPS: &[Op] = &[
    op("kv.get", C::KvRead, P::KvGet),
    op("kv.list", C::KvRead, P::KvList),
    op("kv.put", C::KvWrite, P::KvPut),
    op("kv.delete", C::KvWrite, P::KvDelete),
    op("log.write", C::LogWrite, P::Log),
    op("monitor.stats", C::MonitorRead, P::MonitorStats),
    op("audit.query", C::AuditRead, P::AuditQuery),
    op("net.dial", C::HttpEgress, P::NetDial),
    op("fs.open", C::StaticRead, P::FsOpen),
    op(
        "monitor.configure",
        C::MonitorAdmin,
        P::Unavailable("no monitor administration provider is configured"),
    ),
    op(
        "node.info",
        C::NodeRead,
        P::Unavailable("no node inventory provider is configured"),
    ),
    op(
        "node.configure",
        C::NodeAdmin,
        P::Unavailable("no node administration provider is configured"),
    ),
    op(
        "notify.send",
        C::NotifySend,
        P::Unavailable("no notification provider is configured"),
    ),
    op(
        "task.list",
        C::TaskRead,
        P::Unavailable("no task provider is configured"),
    ),
    op(
        "task.run",
        C::TaskRun,
        P::Unavailable("no task provider is configured"),
    ),
    op(
        "tunnel.configure",
        C::TunnelAdmin,
        P::Unavailable("no tunnel provider is configured"),
    ),
    op(
        "worker.route",
        C::WorkerRoute,
        P::Unavailable("no worker routing provider is configured"),
    ),
    op(
        "network.plan",
        C::NetworkPlan,
        P::Unavailable("no network provider is configured"),
    ),
    op(
        "network.apply",
        C::NetworkApply,
        P::Unavailable("no network provider is configured"),
    ),
    op(
        "ddns.update",
        C::DdnsAdmin,
        P::Unavailable("no dynamic DNS provider is configured"),
    ),
];

/// Looks an op up by name.
pub fn find(name: &str) -> Option<&'static Op> {
    OPS.iter().find(|o| o.name == name)
}

/// Whether `granted` allows `op`. `fs.open` is the one op two capabilities reach:
/// static:read or static:write.
pub fn allowed(op: &Op, granted: &[Capability]) -> bool {
    granted.contains(&op.capability)
        || (op.name == "fs.open" && granted.contains(&Capability::StaticWrite))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_has_an_op_and_names_are_unique() {
        for cap in Capability::ALL {
            assert!(
                OPS.iter().any(|o| o.capability == *cap) || *cap == Capability::StaticWrite,
                "no op for {cap}"
            );
        }
        let mut names: Vec<_> = OPS.iter().map(|o| o.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), OPS.len());
        assert!(find("kv.get").is_some() && find("kv.GET").is_none());
        assert!(allowed(
            find("fs.open").unwrap(),
            &[Capability::StaticWrite]
        ));
    }
}
