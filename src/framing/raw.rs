//! Raw framing: no framing at all.

use super::{Flow, FrameError, Framing, Remainder};

/// Whatever bytes each read brought, as one frame, `&[u8]`: for handlers that
/// parse for themselves. Where the reads are cut is up to the network, not the
/// peer, so a handler must expect a message in several pieces and several
/// messages in one.
///
/// # Memory
///
/// Never buffers: the remainder stays empty, and a read is delivered from the
/// loop's read buffer. What a handler keeps between reads is its own to
/// bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Raw;

impl Framing for Raw {
    type Frame<'a> = &'a [u8];

    fn split<F>(
        &mut self,
        _rest: &mut Remainder,
        input: &[u8],
        mut on_frame: F,
    ) -> Result<(), FrameError>
    where
        F: FnMut(&[u8]) -> Flow,
    {
        // An empty read (none reaches here from the loop, which sees end of
        // stream instead) is not a frame.
        if !input.is_empty() {
            on_frame(input);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::testing::{cut, run};
    use proptest::prelude::*;

    /// Each read is one frame, as it came.
    #[test]
    fn each_read_is_a_frame() {
        let (frames, rest, res, peak) =
            run(&mut Raw, &[b"ab\n", b"", b"\0c"], |b: &[u8]| b.to_vec());
        assert_eq!(res, Ok(()));
        assert_eq!(frames, vec![b"ab\n".to_vec(), b"\0c".to_vec()]);
        assert_eq!((rest.len(), peak), (0, 0));
    }

    proptest! {
        /// Any stream cut anywhere is delivered whole, in order, and nothing
        /// is ever buffered.
        #[test]
        fn the_frames_are_the_stream(
            data in proptest::collection::vec(any::<u8>(), 0..256),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let (frames, _, res, peak) = run(&mut Raw, &cut(&data, &cuts), |b: &[u8]| b.to_vec());
            prop_assert_eq!(res, Ok(()));
            prop_assert_eq!(frames.concat(), data);
            prop_assert!(frames.iter().all(|f| !f.is_empty()));
            prop_assert_eq!(peak, 0);
        }
    }
}
