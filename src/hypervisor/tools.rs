//! Running QEMU's own programs (`qemu-system-x86_64`, `qemu-img`) as child processes: whether
//! they run at all, and a short account of what they printed when they failed, for error messages.

use std::path::Path;
use std::process::Stdio;

use super::HypervisorError;

/// Runs `<binary> --version` and returns its first line.
pub async fn binary_version(binary: &Path) -> Result<String, HypervisorError> {
    let output = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            HypervisorError::Permanent(format!("{} cannot be run ({e})", binary.display()))
        })?;
    if !output.status.success() {
        return Err(HypervisorError::Permanent(format!(
            "{} --version failed: {}",
            binary.display(),
            stderr_summary(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// The last meaningful lines of a tool's stderr, for an error message.
pub fn stderr_summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "it printed no reason".to_string();
    }
    lines[lines.len().saturating_sub(3)..].join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_keeps_the_last_three_non_blank_lines() {
        assert_eq!(
            stderr_summary(b"one\n\n  two  \nthree\nfour\n\n"),
            "two; three; four"
        );
        assert_eq!(stderr_summary(b"only\n"), "only");
        assert_eq!(stderr_summary(b" \n\n"), "it printed no reason");
    }
}
