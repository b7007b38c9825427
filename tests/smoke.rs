mod common;

use common::TestServer;
use portal_chat::client::Message;

#[test]
fn two_clients_chat() {
    let server = TestServer::start(&[]);
    let mut a = server.join();
    let mut b = server.join();
    assert!(b.partner_present);
    a.next_message().unwrap(); // partner connected
    a.send_line(b"hello").unwrap();
    assert_eq!(
        b.next_message().unwrap(),
        Some(Message::Chat(b"hello".to_vec()))
    );
}
