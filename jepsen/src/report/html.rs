//! `index.html`: verdicts first, then numbers, plots, violations and logs.

use std::fmt::Write;

use super::Summary;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn verdict(valid: bool) -> &'static str {
    if valid {
        "<b style=\"color:#2e8b57\">valid</b>"
    } else {
        "<b style=\"color:#c82828\">INVALID</b>"
    }
}

fn list(out: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(out, "<h3>{} ({})</h3><ul>", escape(title), items.len());
    for item in items.iter().take(200) {
        let _ = write!(out, "<li><code>{}</code></li>", escape(item));
    }
    if items.len() > 200 {
        let _ = write!(out, "<li>… {} more in results.json</li>", items.len() - 200);
    }
    out.push_str("</ul>");
}

pub fn render(s: &Summary, logs: &[String], timeline_step: usize) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:1150px;margin:1em auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}</style>\
         </head><body><h1>{t}: {v}</h1>",
        t = escape(&s.test),
        v = verdict(s.valid)
    );
    let _ = write!(
        o,
        "<p>seed <code>{}</code> · {:.0} s · versions <code>{}</code> · arguments <code>{}</code></p>",
        s.seed,
        s.duration_s,
        escape(&serde_json::to_string(&s.versions).unwrap_or_default()),
        escape(&s.arguments.to_string())
    );
    o.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>detail</th></tr>");
    if let Some(q) = &s.queue {
        let _ = write!(
            o,
            "<tr><td>queue</td><td>{}</td><td>acknowledged {}, lost {}, unexpected {}, duplicates {}, stale accepted {}, attempts not increasing {}</td></tr>",
            verdict(q.valid), q.acknowledged, q.lost.len(), q.unexpected.len(), q.duplicates.len(),
            q.stale_accepted.len(), q.attempts_not_increasing.len()
        );
    }
    if let Some(l) = &s.linearizable {
        let _ = write!(
            o,
            "<tr><td>linearizable</td><td>{}</td><td>{} keys, {} operations, {:.0} ms</td></tr>",
            verdict(l.is_linearizable()),
            l.keys.len(),
            l.operations,
            l.elapsed_ms
        );
    }
    let c = &s.cluster;
    let _ = write!(
        o,
        "<tr><td>cluster</td><td>{}</td><td>{} samples, {} terms with a leader, faults run {}</td></tr></table>",
        verdict(c.valid),
        c.samples,
        c.terms_with_leader,
        escape(&serde_json::to_string(&c.nemesis_runs).unwrap_or_default())
    );
    o.push_str("<h2>Operations</h2><table><tr><th>operation</th><th>ok</th><th>fail</th><th>info</th><th>none</th></tr>");
    for (f, outcomes) in &s.operations {
        let n = |k: &str| outcomes.get(k).copied().unwrap_or(0);
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(f),
            n("ok"),
            n("fail"),
            n("info"),
            n("none")
        );
    }
    o.push_str("</table>");
    let u = &s.unavailability;
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0} ms"));
    let _ = write!(
        o,
        "<p>Writes unavailable after a leader kill: median {}, p99 {} over {} leader kills \
         ({} faults aimed at the leader in all, kills, pauses and partitions).</p>",
        fmt(u.kill_leader_median_ms),
        fmt(u.kill_leader_p99_ms),
        u.kill_leader_measured,
        u.windows.len()
    );
    let _ = write!(
        o,
        "<p>Drain after the faults: <code>{}</code></p>",
        escape(&s.drain.to_string())
    );
    o.push_str("<h2>Plots</h2><p>Shaded: fault windows.</p>");
    o.push_str("<img src=\"latency.svg\"><img src=\"throughput.svg\">");
    let sampled = if timeline_step > 1 {
        format!(" (one operation in {timeline_step} drawn)")
    } else {
        String::new()
    };
    let _ = write!(o, "<h3>Timeline{sampled}</h3><img src=\"timeline.svg\">");
    o.push_str("<h2>Violations</h2>");
    if let Some(q) = &s.queue {
        let show = |v: &Vec<crate::checker::queue::Violation>| -> Vec<String> {
            v.iter()
                .map(|x| format!("{} on {}: {}", x.task, x.replica, x.detail))
                .collect()
        };
        list(&mut o, "lost tasks", &show(&q.lost));
        list(&mut o, "unexpected tasks", &show(&q.unexpected));
        list(&mut o, "duplicates", &show(&q.duplicates));
        list(&mut o, "stale reports accepted", &show(&q.stale_accepted));
        list(&mut o, "attempt numbers", &show(&q.attempts_not_increasing));
    }
    if let Some(l) = &s.linearizable {
        if !l.is_linearizable() {
            let _ = write!(
                o,
                "<h3>linearizability</h3><pre>{}</pre>",
                escape(&serde_json::to_string_pretty(&l.verdict).unwrap_or_default())
            );
        }
    }
    list(&mut o, "split brain", &c.split_brain);
    list(
        &mut o,
        "terms with several leaders (a later, higher leader id superseded an earlier one)",
        &c.terms_with_several_leaders,
    );
    list(&mut o, "went backwards", &c.went_backwards);
    list(&mut o, "digests differ", &c.digests_differ);
    list(&mut o, "panics", &c.panics);
    list(&mut o, "faults that never ran", &c.nemeses_not_run);
    o.push_str("<h2>Logs</h2><ul>");
    for l in logs {
        let _ = write!(o, "<li><a href=\"{0}\">{0}</a></li>", escape(l));
    }
    o.push_str("</ul><p>Raw: <a href=\"history.jsonl\">history.jsonl</a>, <a href=\"results.json\">results.json</a>, <a href=\"final.json\">final.json</a>, <a href=\"status.jsonl\">status.jsonl</a></p></body></html>");
    o
}
