//! Replays every committed input of the recovery fuzz target (seed corpus and every input
//! the fuzzer ever found) through its harness: none may panic.

use media::fuzz_corpus::replay;

#[test]
fn recovery_corpus_and_regressions() {
    replay("recovery", recorder::fuzz_recovery);
}
