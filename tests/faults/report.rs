//! The catalogue's table, and what went wrong where.

use crate::checks::Row;

const HEADER: [&str; 10] = [
    "scenario",
    "acknowledged",
    "queued",
    "lost",
    "duplicates",
    "refused-but-delivered",
    "outcome-unknown",
    "recovery s",
    "scheduled",
    "last late s",
];

/// A Markdown table, so RELIABILITY.md can hold it as printed.
pub fn table(rows: &[Row]) -> String {
    let mut lines = vec![
        format!("| {} | result |", HEADER.join(" | ")),
        format!("|{}", " --- |".repeat(HEADER.len() + 1)),
    ];
    for row in rows {
        let recovery = row
            .recovery_secs
            .map_or_else(|| "never".to_owned(), |secs| format!("{secs:.1}"));
        let late = row
            .last_late_secs
            .map_or_else(|| "-".to_owned(), |secs| format!("{secs:.2}"));
        let result = if row.failures.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {recovery} | {} | {late} | {result} |",
            row.scenario,
            row.acknowledged,
            row.queued,
            row.lost,
            row.duplicates,
            row.refused_delivered,
            row.outcome_unknown,
            row.scheduled,
        ));
    }
    lines.join("\n")
}

/// Per scenario: its notes, and its first failures (all of them are counted above).
pub fn details(rows: &[Row]) -> String {
    let mut text = String::new();
    for row in rows {
        if row.failures.is_empty() && row.notes.is_empty() {
            continue;
        }
        text.push_str(&format!("\n## {}\n", row.scenario));
        for note in &row.notes {
            text.push_str(&format!("- {note}\n"));
        }
        for failure in row.failures.iter().take(12) {
            text.push_str(&format!("- FAIL {failure}\n"));
        }
        if row.failures.len() > 12 {
            text.push_str(&format!("- ... {} failures in all\n", row.failures.len()));
        }
    }
    text
}
