//! Misbehaves on request, for the sandbox's tests: `loop` spins forever,
//! `grow` allocates without bound, `trap` panics, `big N` returns N bytes,
//! `invalid` declares its result invalid, anything else returns `ok`.
use squall_guest::{export, text_arg, Error};

fn misbehave(args: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    match text_arg(args, 0)? {
        "loop" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => panic!("asked to trap"),
        "big" => {
            let n: usize = text_arg(args, 1)?
                .parse()
                .map_err(|_| Error::failed("big N"))?;
            Ok(vec![b'x'; n])
        }
        "invalid" => Err(Error::invalid("asked to be invalid")),
        _ => Ok(b"ok".to_vec()),
    }
}

export!(misbehave);
