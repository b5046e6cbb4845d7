include!("../mlx-sys/final_link.rs");

fn main() {
    link_mlx_final();
}
