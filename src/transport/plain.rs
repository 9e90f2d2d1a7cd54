//! The plaintext transport: bytes pass through untouched.

use super::{Received, SessionInfo, Transport, TransportError};

/// Plain TCP (or Unix) bytes. Zero-sized: a plaintext connection pays
/// nothing for the transport seam, neither in memory nor in instructions
/// (every method below inlines to nothing, or to the call it forwards).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Plain;

impl Transport for Plain {
    type Loop = ();
    const PLAINTEXT: bool = true;

    #[inline]
    fn start(_: &mut ()) -> Result<Self, String> {
        Ok(Plain)
    }

    #[inline]
    fn receive(
        &mut self,
        _: &mut (),
        input: &mut [u8],
        plain: &mut Vec<u8>,
        _wire: &mut Vec<u8>,
        mut deliver: impl FnMut(Received<'_>, Option<&dyn SessionInfo>, &mut Vec<u8>) -> bool,
    ) -> Result<(), TransportError> {
        deliver(Received::Plaintext(input), None, plain);
        Ok(())
    }

    /// The replies are already wire bytes: written straight from the loop's
    /// write buffer, never copied.
    #[inline]
    fn seal<'a>(&mut self, plain: &'a mut Vec<u8>, _wire: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
        plain
    }

    #[inline]
    fn close(&mut self, _: &mut Vec<u8>) {}

    #[inline]
    fn info(&self) -> Option<&dyn SessionInfo> {
        None
    }

    #[inline]
    fn is_handshaking(&self) -> bool {
        false
    }

    #[inline]
    fn handshake_progress(&self) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_passes_through_and_costs_no_memory() {
        assert_eq!(std::mem::size_of::<Plain>(), 0);
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        Plain
            .receive(
                &mut (),
                &mut b"abc".to_vec(),
                &mut plain,
                &mut wire,
                |r, info, out| {
                    assert!(info.is_none());
                    if let Received::Plaintext(p) = r {
                        seen.extend_from_slice(p);
                        out.extend_from_slice(b"reply");
                    }
                    true
                },
            )
            .unwrap();
        assert_eq!(seen, b"abc");
        assert_eq!(Plain.seal(&mut plain, &mut wire).as_slice(), b"reply");
        assert!(wire.is_empty(), "no copy into a second buffer");
    }
}
