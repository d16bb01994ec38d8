//! `square`: the decimal text argument squared.
use squall_guest::{export, text_arg, Error};

fn square(args: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let s = text_arg(args, 0)?;
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| Error::failed(format!("expected a decimal integer, got {s:?}")))?;
    let r = n.checked_mul(n).ok_or_else(|| Error::failed("overflow"))?;
    Ok(r.to_string().into_bytes())
}

export!(square);
