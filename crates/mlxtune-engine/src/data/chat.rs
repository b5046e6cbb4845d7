//! Chat records: message content (a string, or OpenAI's list of text parts), and the byte
//! ranges of the rendered conversation that the loss covers, found in time linear in the
//! number of messages.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::Value;

use crate::tokenizer::Tokenizer;

/// Messages rendered (summed over prefixes) to locate turns the fast way could not find;
/// past it a record is refused, so no conversation makes the pre-flight quadratic.
const RERENDER_BUDGET: usize = 1 << 16;
/// Distinct ways of rendering an assistant turn remembered per record.
const MAX_PATTERNS: usize = 8;

/// The text of `messages[i].content`: a string, or OpenAI's content parts
/// (`[{"type": "text", "text": "…"}]`, joined with newlines); `None` when absent or null
/// (a message with `tool_calls` only).
pub fn content_text(m: &Value, i: usize) -> Result<Option<Cow<'_, str>>, String> {
    match m.get("content") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Cow::Borrowed(s))),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    _ => {
                        return Err(format!(
                            "messages[{i}].content[{j}] must be a text part {{\"type\": \"text\", \"text\": \"…\"}} (other parts are not supported)"
                        ))
                    }
                }
            }
            Ok(Some(Cow::Owned(texts.join("\n"))))
        }
        Some(_) => Err(format!(
            "messages[{i}].content must be a string or a list of text parts"
        )),
    }
}

/// The messages with every content as a string (content parts joined), borrowed when
/// they already are.
pub fn plain_messages(messages: &[Value]) -> Result<Cow<'_, [Value]>, String> {
    let mut changed: Option<Vec<Value>> = None;
    for (i, m) in messages.iter().enumerate() {
        let text = content_text(m, i)?;
        if let Some(Cow::Owned(t)) = text {
            let all = changed.get_or_insert_with(|| messages.to_vec());
            all[i]["content"] = Value::String(t);
        }
    }
    Ok(changed.map_or(Cow::Borrowed(messages), Cow::Owned))
}

/// How an assistant turn renders: the generation prompt before it, then the text before
/// and after its content.
#[derive(PartialEq)]
struct Pattern {
    prompt: String,
    open: String,
    close: String,
}

/// Byte ranges of the rendered conversation `full` that the loss covers (assistant turns
/// whose `weight` is not 0). A turn is what rendering the prefix through it adds to the
/// prefix before it with the generation prompt. The first turn of each kind is located that
/// way (renders of its prefix); the text around its content is remembered, and every later
/// turn is found as that text around its own content, in one pass over `full`.
pub fn assistant_spans(
    tok: &Tokenizer,
    messages: &[Value],
    tools: Option<&Value>,
    full: &str,
) -> Result<Vec<Range<usize>>, String> {
    let mut patterns: Vec<Pattern> = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::new();
    let mut rendered = 0usize;
    for (i, m) in messages.iter().enumerate() {
        if m.get("role").and_then(Value::as_str) != Some("assistant")
            || m.get("weight").and_then(Value::as_f64) == Some(0.0)
        {
            continue;
        }
        let content = m.get("content").and_then(Value::as_str);
        let cursor = spans.last().map_or(0, |s| s.end);
        let found =
            content.and_then(|c| patterns.iter().find_map(|p| find_turn(full, cursor, p, c)));
        let span = match found {
            Some(s) => s,
            None => {
                rendered += 3 * i + 1;
                if rendered > RERENDER_BUDGET {
                    return Err(format!(
                        "message {i}: locating the assistant turns of this conversation needs too many renderings of it (its template renders turns differently from one another); set trainOnInputs to train on whole sequences, or split the conversation"
                    ));
                }
                let (s, prompt) = rendered_span(tok, messages, tools, full, i)?;
                if s.start < cursor {
                    return Err(differently(i));
                }
                if let Some(p) = content.and_then(|c| pattern_of(prompt, &full[s.clone()], c)) {
                    if patterns.len() < MAX_PATTERNS && !patterns.contains(&p) {
                        patterns.push(p);
                    }
                }
                s
            }
        };
        spans.push(span);
    }
    Ok(spans)
}

fn differently(i: usize) -> String {
    format!(
        "the chat template renders message {i} differently as part of a longer conversation, \
         so assistant turns cannot be located; set trainOnInputs to train on whole sequences"
    )
}

/// Turn `i` located by rendering its prefixes (with and without it), and the generation
/// prompt just before it.
fn rendered_span(
    tok: &Tokenizer,
    messages: &[Value],
    tools: Option<&Value>,
    full: &str,
    i: usize,
) -> Result<(Range<usize>, String), String> {
    let render = |msgs: &[Value], gen: bool| {
        tok.apply_chat_template(msgs, tools, gen)
            .map_err(|e| e.to_string())
    };
    let before = render(&messages[..i], true)?;
    let through = render(&messages[..=i], false)?;
    if !full.starts_with(&before) || !full.starts_with(&through) || through.len() < before.len() {
        return Err(differently(i));
    }
    let plain = render(&messages[..i], false)?;
    let prompt = before
        .strip_prefix(plain.as_str())
        .unwrap_or("")
        .to_string();
    Ok((before.len()..through.len(), prompt))
}

/// The text before and after `content` in a rendered turn.
fn pattern_of(prompt: String, turn: &str, content: &str) -> Option<Pattern> {
    let at = turn.find(content)?;
    Some(Pattern {
        prompt,
        open: turn[..at].to_string(),
        close: turn[at + content.len()..].to_string(),
    })
}

/// The first turn rendered as `p` around `content` in `full` at or after `from`.
fn find_turn(full: &str, from: usize, p: &Pattern, content: &str) -> Option<Range<usize>> {
    let needle = [&p.prompt, &p.open, content, &p.close].concat();
    let at = from + full.get(from..)?.find(&needle)? + p.prompt.len();
    Some(at..at + needle.len() - p.prompt.len())
}

/// Whether each token (by its byte offsets) overlaps a span; `spans` are sorted and
/// disjoint, offsets in order, so this is one pass over both.
pub fn span_mask(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    let mut k = 0;
    offsets
        .iter()
        .map(|&(s, e)| {
            while spans.get(k).is_some_and(|sp| sp.end <= s) {
                k += 1;
            }
            e > s && spans.get(k).is_some_and(|sp| e > sp.start && s < sp.end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_parts_join_and_other_contents_are_refused_by_index() {
        let m = json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]});
        assert_eq!(content_text(&m, 0).unwrap().as_deref(), Some("a\nb"));
        let e = content_text(&json!({"content": 7}), 3).unwrap_err();
        assert!(e.contains("messages[3].content"), "{e}");
        let e = content_text(&json!({"content": [{"type": "image_url"}]}), 1).unwrap_err();
        assert!(e.contains("messages[1].content[0]"), "{e}");
    }

    #[test]
    fn the_mask_marks_tokens_overlapping_spans() {
        let offsets = [(0, 2), (2, 4), (4, 6), (6, 8), (0, 0), (8, 10)];
        let mask = span_mask(&offsets, &[3..5, 8..9]);
        assert_eq!(mask, [false, true, true, false, false, true]);
    }
}
