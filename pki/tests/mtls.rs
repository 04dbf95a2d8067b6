//! End-to-end mutual TLS over 127.0.0.1: a tonic `Ca` service that answers
//! `GetRootCaCertificate` with the caller's identity (taken from the
//! `PeerInfo` request extension), served through `tls_incoming`, called
//! through `tls_channel` with the various client configurations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rswarm_pki::{
    CredentialsHandle, MANAGER_SERVER_NAME, NodeCredentials, NodeSubject, PeerInfo, Role, RootCa,
    WORKER_SERVER_NAME, anonymous_client_config, bootstrap_client_config, client_config,
    generate_key_and_csr, install_crypto_provider, server_config, tls_channel, tls_incoming,
    unix_channel,
};
use rswarm_proto::ca_client::CaClient;
use rswarm_proto::ca_server::{Ca, CaServer};
use rswarm_proto::{
    GetRootCaCertificateRequest, GetRootCaCertificateResponse, IssueNodeCertificateRequest,
    IssueNodeCertificateResponse, RenewNodeCertificateRequest, RenewNodeCertificateResponse,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Answers with "node_id/role/cluster_id", "anonymous", or "no-peer-info".
struct WhoAmI;

#[tonic::async_trait]
impl Ca for WhoAmI {
    async fn get_root_ca_certificate(
        &self,
        request: Request<GetRootCaCertificateRequest>,
    ) -> Result<Response<GetRootCaCertificateResponse>, Status> {
        let text = match request.extensions().get::<PeerInfo>() {
            None => "no-peer-info".to_owned(),
            Some(PeerInfo { identity: None, .. }) => "anonymous".to_owned(),
            Some(PeerInfo {
                identity: Some(s),
                cert_serial_hex,
                ..
            }) => {
                assert!(cert_serial_hex.as_ref().is_some_and(|s| !s.is_empty()));
                format!("{}/{}/{}", s.node_id, s.role, s.cluster_id)
            }
        };
        Ok(Response::new(GetRootCaCertificateResponse {
            ca_cert_pem: text,
        }))
    }

    async fn issue_node_certificate(
        &self,
        _request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn renew_node_certificate(
        &self,
        _request: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<RenewNodeCertificateResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
}

fn issue(ca: &RootCa, node_id: &str, role: Role) -> NodeCredentials {
    let (key_pem, csr) = generate_key_and_csr().unwrap();
    let subject = NodeSubject {
        node_id: node_id.into(),
        role,
        cluster_id: "cluster1".into(),
    };
    NodeCredentials {
        ca_cert_pem: ca.cert_pem().to_owned(),
        cert_pem: ca.sign_node_csr(&csr, &subject, DAY).unwrap(),
        key_pem,
    }
}

fn handle(ca: &RootCa, node_id: &str, role: Role) -> CredentialsHandle {
    CredentialsHandle::new(issue(ca, node_id, role)).unwrap()
}

/// Serves `WhoAmI` over TLS with the server certificate from `handle`.
async fn serve(handle: &CredentialsHandle) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls_incoming(listener, server_config(handle).unwrap());
    tokio::spawn(
        Server::builder()
            .add_service(CaServer::new(WhoAmI))
            .serve_with_incoming(incoming),
    );
    addr
}

fn channel(addr: SocketAddr, config: Arc<ClientConfig>, name: &'static str) -> Channel {
    tls_channel(&addr.to_string(), config, name).unwrap()
}

async fn who_am_i(channel: Channel) -> Result<String, Status> {
    CaClient::new(channel)
        .get_root_ca_certificate(GetRootCaCertificateRequest {})
        .await
        .map(|r| r.into_inner().ca_cert_pem)
}

async fn call(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &'static str,
) -> Result<String, Status> {
    who_am_i(channel(addr, config, name)).await
}

#[tokio::test]
async fn manager_client_is_identified() {
    install_crypto_provider();
    install_crypto_provider();
    let ca = RootCa::generate().unwrap();
    let addr = serve(&handle(&ca, "server1", Role::Manager)).await;
    let client = client_config(&handle(&ca, "client1", Role::Manager)).unwrap();
    let answer = call(addr, client, MANAGER_SERVER_NAME).await.unwrap();
    assert_eq!(answer, "client1/manager/cluster1");
    let worker = client_config(&handle(&ca, "w1", Role::Worker)).unwrap();
    let answer = call(addr, worker, MANAGER_SERVER_NAME).await.unwrap();
    assert_eq!(answer, "w1/worker/cluster1");
}

#[tokio::test]
async fn anonymous_client_has_no_identity() {
    let ca = RootCa::generate().unwrap();
    let addr = serve(&handle(&ca, "server1", Role::Manager)).await;
    let client = anonymous_client_config(ca.cert_pem()).unwrap();
    let answer = call(addr, client, MANAGER_SERVER_NAME).await.unwrap();
    assert_eq!(answer, "anonymous");
    // The anonymous client still verifies the server against its CA.
    let other = RootCa::generate().unwrap();
    let client = anonymous_client_config(other.cert_pem()).unwrap();
    assert!(call(addr, client, MANAGER_SERVER_NAME).await.is_err());
}

/// A client that trusts the server's CA but presents `creds`.
fn client_presenting(server_ca: &RootCa, creds: &NodeCredentials) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let cert = CertificateDer::from_pem_slice(creds.cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused() {
    let ca = RootCa::generate().unwrap();
    let addr = serve(&handle(&ca, "server1", Role::Manager)).await;
    // Control: the hand-built client works with a certificate of this CA.
    let ours = client_presenting(&ca, &issue(&ca, "friend", Role::Worker));
    assert_eq!(
        call(addr, ours, MANAGER_SERVER_NAME).await.unwrap(),
        "friend/worker/cluster1"
    );
    let foreign_ca = RootCa::generate().unwrap();
    let intruder = client_presenting(&ca, &issue(&foreign_ca, "intruder", Role::Manager));
    let err = call(addr, intruder, MANAGER_SERVER_NAME).await.unwrap_err();
    // The server aborts the handshake with a fatal alert.
    assert!(format!("{err:?}").contains("alert"), "{err:?}");
    // A node of another cluster altogether fails too.
    let foreign = client_config(&handle(&foreign_ca, "intruder", Role::Manager)).unwrap();
    assert!(call(addr, foreign, MANAGER_SERVER_NAME).await.is_err());
    // The failed handshakes did not stop the server.
    let anonymous = anonymous_client_config(ca.cert_pem()).unwrap();
    assert_eq!(
        call(addr, anonymous, MANAGER_SERVER_NAME).await.unwrap(),
        "anonymous"
    );
}

#[tokio::test]
async fn worker_server_cannot_pose_as_manager() {
    let ca = RootCa::generate().unwrap();
    let addr = serve(&handle(&ca, "w-server", Role::Worker)).await;
    let client = client_config(&handle(&ca, "client1", Role::Manager)).unwrap();
    let err = call(addr, Arc::clone(&client), MANAGER_SERVER_NAME)
        .await
        .unwrap_err();
    assert!(err.message().contains("not valid for name"), "{err:?}");
    // Control: the same server is fine under its real name.
    let answer = call(addr, client, WORKER_SERVER_NAME).await.unwrap();
    assert_eq!(answer, "client1/manager/cluster1");
}

#[tokio::test]
async fn bootstrap_client_reaches_any_server() {
    let unknown_ca = RootCa::generate().unwrap();
    let addr = serve(&handle(&unknown_ca, "server1", Role::Worker)).await;
    let answer = call(addr, bootstrap_client_config(), MANAGER_SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(answer, "anonymous");
}

#[tokio::test]
async fn replaced_credentials_apply_to_new_connections() {
    let ca = RootCa::generate().unwrap();
    let server = handle(&ca, "server1", Role::Manager);
    let addr = serve(&server).await;
    let client = handle(&ca, "node1", Role::Worker);
    let config = client_config(&client).unwrap();
    let old_channel = channel(addr, Arc::clone(&config), MANAGER_SERVER_NAME);
    assert_eq!(
        who_am_i(old_channel.clone()).await.unwrap(),
        "node1/worker/cluster1"
    );

    // Client promoted: the same config presents the new certificate.
    client.replace(issue(&ca, "node1", Role::Manager)).unwrap();
    let answer = call(addr, Arc::clone(&config), MANAGER_SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(answer, "node1/manager/cluster1");

    // Server demoted: new connections see a worker certificate, which no
    // longer passes as a manager, while the existing connection goes on.
    server.replace(issue(&ca, "server1", Role::Worker)).unwrap();
    assert!(
        call(addr, Arc::clone(&config), MANAGER_SERVER_NAME)
            .await
            .is_err()
    );
    assert_eq!(
        who_am_i(old_channel).await.unwrap(),
        "node1/worker/cluster1"
    );
}

#[tokio::test]
async fn silent_connection_does_not_block_others() {
    let ca = RootCa::generate().unwrap();
    let addr = serve(&handle(&ca, "server1", Role::Manager)).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    let client = anonymous_client_config(ca.cert_pem()).unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        call(addr, client, MANAGER_SERVER_NAME),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer, "anonymous");
}

#[tokio::test]
async fn dropping_the_stream_closes_the_listener() {
    let ca = RootCa::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = handle(&ca, "server1", Role::Manager);
    let incoming = tls_incoming(listener, server_config(&server).unwrap());
    drop(incoming);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unix_channel_reaches_local_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rswarm.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(CaServer::new(WhoAmI))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let answer = who_am_i(unix_channel(path)).await.unwrap();
    assert_eq!(answer, "no-peer-info");
}

#[test]
fn bad_server_name_and_address_are_errors() {
    let config = bootstrap_client_config();
    assert!(tls_channel("127.0.0.1:1", Arc::clone(&config), "not a name!").is_err());
    assert!(tls_channel("bad address with spaces", config, MANAGER_SERVER_NAME).is_err());
}
