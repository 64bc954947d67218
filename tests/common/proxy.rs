//! An in-process proxy for integration tests, on a port of its own, dropped with the test.

use std::net::SocketAddr;
use std::time::Duration;

use ndots::config::{Config, FileConfig, Overrides};

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
        // A port nobody holds, not port 0: with SO_REUSEPORT the kernel may give port 0 a port
        // another test's proxy still holds, and the two would share its queries.
        let port = super::tools::free_port();
        let file = FileConfig::parse(&format!(
            "listen: [\"127.0.0.1:{port}\"]\nserver: {{workers: 2}}\n{yaml_extra}"
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
        Self::with_config(cfg)
    }

    /// A proxy for a config the test built itself.
    pub fn with_config(cfg: Config) -> TestProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let proxy = ndots::proxy::start(cfg, rt.handle()).unwrap();
        let addr = proxy.dns_addrs[0];
        TestProxy {
            rt,
            proxy: Some(proxy),
            addr,
        }
    }
}
