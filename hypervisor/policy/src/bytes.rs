//! Little-endian integers read from byte slices: the one reader every parser of firmware
//! tables, boot information and image formats uses (ACPI, Multiboot, ELF, bzImage, PVH).
//!
//! Every read is bounds-checked and returns `None` past the end, so a truncated or hostile
//! input is an error for the caller to name, never a panic.

/// A fixed-width little-endian integer.
pub trait LittleEndian: Sized + Copy {
    const WIDTH: usize;
    /// The integer in `bytes`, which must be exactly [`Self::WIDTH`] long.
    fn from_exact(bytes: &[u8]) -> Option<Self>;
}

macro_rules! little_endian {
    ($($type:ty),*) => {$(
        impl LittleEndian for $type {
            const WIDTH: usize = core::mem::size_of::<$type>();
            #[inline]
            fn from_exact(bytes: &[u8]) -> Option<Self> {
                Some(<$type>::from_le_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
little_endian!(u8, u16, u32, u64);

/// The integer of type `T` at `offset`, or `None` if it does not lie wholly inside `bytes`.
#[inline]
pub fn read<T: LittleEndian>(bytes: &[u8], offset: usize) -> Option<T> {
    let end = offset.checked_add(T::WIDTH)?;
    T::from_exact(bytes.get(offset..end)?)
}

#[inline]
pub fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    read(bytes, offset)
}

#[inline]
pub fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    read(bytes, offset)
}

#[inline]
pub fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    read(bytes, offset)
}

/// The bytes `[offset, offset + length)`, if they lie inside `bytes`.
#[inline]
pub fn slice_at(bytes: &[u8], offset: usize, length: usize) -> Option<&[u8]> {
    bytes.get(offset..offset.checked_add(length)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_inside_and_refuses_past_the_end() {
        let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];
        assert_eq!(u16_at(&bytes, 0), Some(0x0201));
        assert_eq!(u32_at(&bytes, 1), Some(0x0504_0302));
        assert_eq!(u64_at(&bytes, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(read::<u8>(&bytes, 8), Some(0x09));
        assert_eq!(u64_at(&bytes, 2), None);
        assert_eq!(u16_at(&bytes, usize::MAX), None);
        assert_eq!(slice_at(&bytes, 7, 2), Some(&bytes[7..9]));
        assert_eq!(slice_at(&bytes, 8, 2), None);
    }
}
