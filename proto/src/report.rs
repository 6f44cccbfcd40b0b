//! One line per failure for people: an error and its causes, without saying anything twice.
//!
//! Many error types already quote their cause in their own message; printing the whole chain
//! naively would repeat it.

use std::error::Error;

/// `outer: cause: root cause`, skipping a cause whose text the line already contains.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer says: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Plain(#[source] std::io::Error);

    #[test]
    fn causes_appear_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(chain(&Quoting(io())), "outer says: disk on fire");
        assert_eq!(chain(&Plain(io())), "outer: disk on fire");
    }
}
