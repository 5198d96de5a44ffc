fn main() { println!("{}", tern_engine::smoke()); }
