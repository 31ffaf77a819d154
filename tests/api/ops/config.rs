//! `--config FILE`: flag > environment > file > default, checked by
//! `caravan config check` and used by `caravan serve`, through the binary.

use std::path::Path;
use tokio::process::Command;

/// Runs the binary with `env`; (exit code, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_caravan"));
    c.args(args).env("RUST_LOG", "warn");
    // The test's own environment must not leak settings in.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARAVAN_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().await.expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "caravan.toml",
        "max-connections = 77\ncache-mib = 32\nwriter-queue = 55\nrebuild-views = true\n\
         data-dir = \"/srv/caravan\"\n",
    );
    let (code, out, err) = run(
        &["config", "check", "--config", &file, "--cache-mib", "16"],
        &[("CARAVAN_MAX_CONNECTIONS", "9")],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "cache-mib = 16  # flag",
        "max-connections = 9  # environment",
        "writer-queue = 55  # config file",
        "rebuild-views = true  # config file",
        "data-dir = \"/srv/caravan\"  # config file",
        "drain-deadline-secs = 5  # default",
        "# the configuration is valid",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    // The printed settings are a config file themselves (comments aside).
    let printed: String = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{}\n", l.split("  #").next().unwrap()))
        .collect();
    let again = write(dir.path(), "printed.toml", &printed);
    let (code, out2, err) = run(&["config", "check", "--config", &again], &[]).await;
    assert_eq!(code, 0, "{out2}{err}");
    assert!(
        out2.contains("max-connections = 9  # config file"),
        "{out2}"
    );
}

#[tokio::test]
async fn an_unknown_key_or_a_bad_value_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("max-conections = 5\n", "unknown key \"max-conections\""),
        ("max-connections = \"many\"\n", "--max-connections"),
        ("insecure = \"yes\"\n", "insecure must be true or false"),
        ("listen = [1, 2]\n", "listen must be a string"),
        ("config = \"other.toml\"\n", "unknown key \"config\""),
        ("not toml at all\n", "not valid TOML"),
    ] {
        let file = write(dir.path(), "bad.toml", text);
        let (code, out, err) = run(&["config", "check", "--config", &file], &[]).await;
        assert_ne!(code, 0, "{text}: {out}");
        assert!(err.contains(expected), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        // serve refuses the same file before it opens anything.
        let (code, _, err2) = run(&["serve", "--config", &file], &[]).await;
        assert_ne!(code, 0);
        assert!(err2.contains(expected), "{err2}");
    }
    // What serve would refuse at its start: beyond loopback without TLS.
    let file = write(dir.path(), "open.toml", "listen = \"0.0.0.0:50051\"\n");
    let (code, _, err) = run(&["config", "check", "--config", &file], &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("refusing to listen on 0.0.0.0:50051"), "{err}");
}

#[tokio::test]
async fn serve_takes_its_settings_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("from-the-file");
    let file = write(
        dir.path(),
        "caravan.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = {:?}\n",
            store.to_str().unwrap()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--config", &file])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    assert!(
        line.starts_with("caravan listening on 127.0.0.1:"),
        "{line}"
    );
    assert!(
        store.join("db").exists(),
        "the store is where the file says"
    );
    crate::helpers::signal(&child, "-TERM");
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn a_list_setting_takes_an_array_or_a_comma_separated_string_and_prints_whole() {
    let dir = tempfile::tempdir().unwrap();
    let servers = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224";
    for text in [
        format!("jetstream = {servers:?}\n"),
        "jetstream = [\"nats://127.0.0.1:4222\", \"nats://127.0.0.1:4223\", \"nats://127.0.0.1:4224\"]\n"
            .to_owned(),
    ] {
        let file = write(dir.path(), "cluster.toml", &text);
        let (code, out, err) = run(&["config", "check", "--config", &file], &[]).await;
        assert_eq!(code, 0, "{out}{err}");
        let line = format!("jetstream = {servers:?}  # config file");
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
}

#[tokio::test]
async fn a_nats_server_beyond_loopback_without_tls_is_refused_unless_insecure() {
    let far = "nats://10.1.2.3:4222";
    let (code, _, err) = run(&["config", "check", "--jetstream", far], &[]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("needs TLS") && err.contains("10.1.2.3"),
        "{err}"
    );
    let (code, out, err) = run(&["config", "check", "--jetstream", far, "--insecure"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
}
