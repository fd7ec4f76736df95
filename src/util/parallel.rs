//! Running a batch of store requests side by side: on S3 each request is a round trip,
//! so reading 28 cell heads, 50 suites' publications or 300 document parts one after
//! the other is what made publishes and daemon starts slow on a slow server.

use std::future::Future;

use futures::{StreamExt, TryStreamExt};

/// Runs `work`, at most `at_once` at a time, and returns the results in `work`'s order,
/// or the first error. The futures are made beforehand from owned inputs: made by a
/// closure inside the stream, they would make a caller's future not `Send` (rustc's
/// higher-ranked lifetime limit on futures inside stream combinators).
pub async fn in_order<T, E, F>(work: Vec<F>, at_once: usize) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>>,
{
    futures::stream::iter(work)
        .buffered(at_once)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_keep_their_order_and_the_first_error_wins() {
        let work: Vec<_> = (0..20u64)
            .map(|i| async move {
                // Later ones finish first.
                tokio::time::sleep(std::time::Duration::from_millis(20 - i)).await;
                Ok::<_, String>(i)
            })
            .collect();
        assert_eq!(in_order(work, 8).await, Ok((0..20).collect::<Vec<_>>()));
        let work: Vec<_> = (0..5u64)
            .map(|i| async move {
                if i == 3 {
                    Err(format!("failed {i}"))
                } else {
                    Ok(i)
                }
            })
            .collect();
        assert_eq!(in_order(work, 2).await, Err("failed 3".to_string()));
    }
}
