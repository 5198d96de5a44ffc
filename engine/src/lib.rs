//! tern-engine
pub fn smoke() -> usize {
    use glommio::LocalExecutorBuilder;
    let ex = LocalExecutorBuilder::default().io_memory(1 << 20).make().unwrap();
    ex.run(async {
        let f = glommio::io::DmaFile::create("/tmp/tern-smoke.dat").await.unwrap();
        let mut b = f.alloc_dma_buffer(4096);
        b.as_bytes_mut().fill(7);
        let n = f.write_at(b, 0).await.unwrap();
        f.fdatasync().await.unwrap();
        f.close().await.unwrap();
        n
    })
}
