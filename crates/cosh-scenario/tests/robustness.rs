//! Scenario files are input: whatever they contain, loading and checking one returns an error
//! or a report, never a panic.

use std::path::Path;
use std::sync::LazyLock;

use cosh_core::model::Model;
use cosh_scenario::{Layout, check, corpus, parse};
use proptest::prelude::*;

/// The corpus files' text, read once.
static TEXTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    corpus()
        .expect("corpus")
        .iter()
        .map(|(path, _)| std::fs::read_to_string(path).expect("read"))
        .collect()
});

fn run(text: &str) {
    if let Ok(s) = parse(text, Path::new("fuzz.toml")) {
        for layout in Layout::ALL {
            let _ = check(&s, &mut Model::default(), layout);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        run(&text);
    }

    /// Corpus files with a span replaced by random text: mostly still TOML, so the checker
    /// itself sees odd names, numbers and operations.
    #[test]
    fn mutated_corpus_files_never_panic(
        file in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        cut in 0usize..40,
        insert in "[a-z0-9_=\\-\" ,{}\\[\\]]{0,30}",
    ) {
        let text = &TEXTS[file.index(TEXTS.len())];
        let start = at.index(text.len());
        let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start + cut..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        run(&format!("{}{insert}{}", &text[..start], &text[end..]));
    }
}
