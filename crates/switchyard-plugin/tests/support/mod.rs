//! What the plugin tests share: the Python that runs `fixtures/echo_plugin.py`.

/// The plugin written in Python.
pub(crate) const SCRIPT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/echo_plugin.py");

/// The Python to run (`$PYTHON`, else `python3`), or `None` with the reason printed when it
/// cannot run; a failure instead when `SWITCHYARD_SERVICES=required`.
pub(crate) fn python() -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    match std::process::Command::new(&python)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Some(python),
        _ if std::env::var("SWITCHYARD_SERVICES").as_deref() == Ok("required") => {
            panic!("{python} cannot run; set PYTHON to a Python 3")
        }
        _ => {
            eprintln!("skipped: {python} cannot run; set PYTHON to a Python 3");
            None
        }
    }
}
