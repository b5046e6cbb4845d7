pub fn smoke() -> f32 {
    let a = mlx_rs::Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]);
    let b = a.multiply(&a).unwrap().sum(None).unwrap();
    b.item::<f32>()
}
#[cfg(test)]
mod t { #[test] fn s() { assert_eq!(super::smoke(), 14.0); } }
