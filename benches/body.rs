//! `cargo bench --bench body`: the time to read a long typed body (1, 2 and
//! 4 MB of lines after a form) must grow linearly with its size. A body is
//! read in the service's own process; a crafted one must not stall it.
//!
//! Prints the seconds per body and per MB; the per-MB figures should stay
//! about the same from 1 to 4 MB.

use std::hint::black_box;
use std::time::Instant;

use xxdc_intake::parse::pipeline::{DEFAULT_REQUIRED, Limits, Pipeline};
use xxdc_intake::parse::sandbox::Isolation;

fn body(bytes: usize) -> String {
    let mut text = String::from(
        "单位：永嘉县民政局\n信息员姓名：胡峰平\n手机：13857712669\n电子邮箱：hfp@yjmz.gov.cn\n",
    );
    let mut i = 0;
    while text.len() < bytes {
        i += 1;
        text.push_str(&format!(
            "第{i}行：这是一段很长的说明文字，用来测试正文很长时的读取时间。\n"
        ));
    }
    text
}

fn message(body: &str) -> Vec<u8> {
    format!(
        "From: hfp@yj.gov.cn\r\nTo: xxdc2004@163.com\r\nSubject: body\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        body.replace('\n', "\r\n")
    )
    .into_bytes()
}

fn main() {
    let pipeline = Pipeline::new(
        None,
        DEFAULT_REQUIRED.to_vec(),
        Isolation::InProcess,
        Limits::default(),
    );
    println!("{:>6} {:>10} {:>10}", "MB", "seconds", "s per MB");
    for mb in [1usize, 2, 4] {
        let raw = message(&body(mb << 20));
        let start = Instant::now();
        let report = pipeline.parse("body.eml", black_box(&raw));
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(report.registrations.len(), 1, "the form at the top is read");
        println!("{mb:>6} {seconds:>10.3} {:>10.3}", seconds / mb as f64);
    }
}
