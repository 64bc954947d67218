//! The proxy under test: in process (`TestProxy` on a port of its own, dropped with the test;
//! `start` for a config in YAML) or as the `ndots` binary (`proxy_command`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ndots::config::{Config, FileConfig, Overrides};

/// The runtime an in-process proxy's misses, TCP and admin run on (two threads).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The config for `yaml` on 127.0.0.1:0: one UDP worker unless `yaml` has a `server:`
/// section, no admin listener unless it has an `admin:` key.
pub fn config(yaml: &str) -> Config {
    let server = if yaml.contains("server:") {
        ""
    } else {
        "server: {workers: 1}\n"
    };
    let file = FileConfig::parse(&format!("listen: [\"127.0.0.1:0\"]\n{server}{yaml}")).unwrap();
    let mut cfg = Config::from_file_config(file, &Overrides::default()).unwrap();
    if !yaml.contains("admin:") {
        cfg.admin = None;
    }
    cfg
}

/// An in-process proxy for [`config`]`(yaml)`, with the runtime it runs on (keep it alive).
pub fn start(yaml: &str) -> (tokio::runtime::Runtime, ndots::proxy::Running) {
    let rt = runtime();
    let p = ndots::proxy::start(config(yaml), rt.handle()).unwrap();
    (rt, p)
}

/// `ndots proxy --listen 127.0.0.1:PORT --upstream UPSTREAM --admin ADMIN`.
pub fn proxy_command(port: u16, upstream: SocketAddr, admin: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ndots"));
    c.args([
        "proxy",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        &upstream.to_string(),
        "--admin",
        admin,
    ]);
    c
}

pub struct TestProxy {
    pub rt: tokio::runtime::Runtime,
    pub proxy: Option<ndots::proxy::Running>,
    pub addr: SocketAddr,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_millis(100));
        }
    }
}

impl TestProxy {
    /// A proxy on 127.0.0.1 with `yaml_extra` added to its config, the given `[ZONE=]ADDR`
    /// upstreams (each with a 1 s timeout) and no admin listener.
    pub fn start(yaml_extra: &str, upstreams: &[(&str, SocketAddr)]) -> TestProxy {
        // A port nobody holds. Chosen here since ae3d3cf, when the kernel could give port 0 a
        // port another test's proxy still held (SO_REUSEPORT); the proxy now avoids that
        // itself (`udp::bind_any_port` in src/proxy/udp.rs).
        let port = super::tools::free_port();
        Self::with_config(Self::config(
            format!("127.0.0.1:{port}").parse().unwrap(),
            yaml_extra,
            upstreams,
        ))
    }

    /// The config [`TestProxy::start`] runs with, listening on `listen` (also what a reload
    /// of a running one takes).
    pub fn config(
        listen: SocketAddr,
        yaml_extra: &str,
        upstreams: &[(&str, SocketAddr)],
    ) -> Config {
        let file = FileConfig::parse(&format!(
            "listen: [\"{listen}\"]\nserver: {{workers: 2}}\n{yaml_extra}"
        ))
        .unwrap();
        let overrides = Overrides {
            upstreams: upstreams.iter().map(|(z, a)| (z.to_string(), *a)).collect(),
            ..Default::default()
        };
        let mut cfg = Config::from_file_config(file, &overrides).unwrap();
        cfg.admin = None;
        for z in cfg.upstreams.iter_mut() {
            z.timeout = Duration::from_millis(1000);
        }
        cfg
    }

    /// A proxy for a config the test built itself.
    pub fn with_config(cfg: Config) -> TestProxy {
        let rt = runtime();
        let proxy = ndots::proxy::start(cfg, rt.handle()).unwrap();
        let addr = proxy.dns_addrs[0];
        TestProxy {
            rt,
            proxy: Some(proxy),
            addr,
        }
    }
}
