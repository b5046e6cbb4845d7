fn main() { println!("{}", mlxtune_engine::smoke()); }
