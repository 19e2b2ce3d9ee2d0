//! The Python package (crates/flare-py): built and installed into a venv
//! (target/py-venv, with pytest, uwsgiconf, uwsgidecorators, pyuwsgi,
//! gunicorn, uvicorn and granian from PyPI), then its pytest suite run.
//! `.ci/run` prepares the venv up front.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_python_package_passes_its_pytest_suite() {
    let _one = ONE_AT_A_TIME.lock();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/py-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating target/py-venv",
        );
    }
    run(
        Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "maturin>=1.5,<2",
            "pytest",
            "uwsgiconf",
            "uwsgidecorators==1.1.0",
            "pyuwsgi==2.0.30",
            // Web servers whose workers attach (tests/test_attach.py).
            "gunicorn==27.0.1",
            "uvicorn==0.55.0",
            "granian==2.8.9",
        ]),
        "installing the test requirements",
    );
    // Built with the dev profile in the workspace's target directory, so
    // it reuses what this `cargo test` compiled (only the extension module
    // itself is compiled here), and as CI's `.ci/release-check` builds it,
    // which then reuses this build; then the wheel installed.
    let wheels = root.join("target/py-test-wheel");
    let _ = std::fs::remove_dir_all(&wheels);
    // Without the variables cargo sets for a test (its CARGO_* and
    // LD_LIBRARY_PATH), which would make this build differ from the
    // release check's and compile everything again there.
    let cargo_test_vars = |k: &str| {
        (k.starts_with("CARGO") && k != "CARGO_HOME") || k == "LD_LIBRARY_PATH" || k == "OUT_DIR"
    };
    run(
        Command::new(venv.join("bin/maturin"))
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| !cargo_test_vars(k)))
            .args(["build", "--profile", "dev", "--quiet", "--out"])
            .arg(&wheels)
            .current_dir(root.join("crates/flare-py")),
        "building the flare Python package",
    );
    let wheel = std::fs::read_dir(&wheels)
        .expect("the wheel's directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("maturin built a wheel");
    run(
        Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--force-reinstall",
                "--no-deps",
            ])
            .arg(&wheel),
        "installing the flare Python package",
    );
    run(
        Command::new(&py)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
            .current_dir(root.join("crates/flare-py")),
        "pytest crates/flare-py/tests",
    );
}
