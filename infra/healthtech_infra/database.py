"""Network and database: NAT-free VPC with endpoints, RDS PostgreSQL reachable only from the Glue job."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct

from .config import EtlConfig, retention, stack_unique

DB_PORT = 5432
DB_NAME = "healthtech"
DB_USER = "etl_admin"

# What the Glue Python shell job calls from inside the VPC (there is no NAT): the secret, metrics,
# continuous logs, and the Glue API itself (a job with a connection needs the glue endpoint).
INTERFACE_ENDPOINTS = {
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "CloudWatchLogs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "CloudWatchMonitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Glue": ec2.InterfaceVpcEndpointAwsService.GLUE,
}


class Database(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: EtlConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.key = key
        self.vpc = self._vpc()
        self.isolated_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        # The Glue connection (one ENI subnet) runs the job in the first isolated subnet's AZ.
        self.job_subnet = self.vpc.isolated_subnets[0]
        # Interface endpoints cost per AZ-hour: by default only in the job's AZ (context endpointAzs=2
        # adds the second AZ, e.g. for a job connection moved there).
        self.endpoint_subnets = ec2.SubnetSelection(subnets=self.vpc.isolated_subnets[: config.endpoint_azs])
        self.glue_sg = self._glue_security_group()
        self.endpoint_sg = self._endpoints()
        self.db_sg = self._database_security_group()
        self.instance = self._instance()
        self.secret = self.instance.secret

    def _vpc(self) -> ec2.Vpc:
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention(self.config.log_retention_days),
            encryption_key=self.key,
            removal_policy=self.config.removal_policy,
        )
        return ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,
            nat_gateways=0,
            restrict_default_security_group=True,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )

    def _glue_security_group(self) -> ec2.SecurityGroup:
        """The Glue job's ENIs. Glue requires a self-referencing all-TCP inbound rule on the
        connection's security group; outbound is limited to what the job talks to."""
        glue_sg = ec2.SecurityGroup(
            self,
            "GlueJobSecurityGroup",
            vpc=self.vpc,
            description="Glue ETL job ENIs (self-referencing rule required by Glue)",
            allow_all_outbound=False,
        )
        glue_sg.add_ingress_rule(glue_sg, ec2.Port.all_tcp(), "Glue: self-referencing, all TCP")
        glue_sg.add_egress_rule(glue_sg, ec2.Port.all_tcp(), "Glue: self-referencing, all TCP")
        return glue_sg

    def _endpoints(self) -> ec2.SecurityGroup:
        """The interface endpoints (HTTPS from the job only); returns their security group."""
        endpoint_sg = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface VPC endpoints: HTTPS from the Glue job only",
            allow_all_outbound=False,
        )
        endpoint_sg.add_ingress_rule(self.glue_sg, ec2.Port.tcp(443), "HTTPS from the Glue job")
        # S3 is reached through the gateway endpoint, whose prefix list id is only known at deploy
        # time (a synth-time lookup would need an account). The subnets are isolated (no internet or
        # NAT route), so HTTPS can only reach S3 and the interface endpoints anyway.
        self.glue_sg.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to S3 (gateway endpoint) and interface endpoints"
        )
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=self.endpoint_subnets,
                security_groups=[endpoint_sg],
                private_dns_enabled=True,
                open=False,
            )
        return endpoint_sg

    def _database_security_group(self) -> ec2.SecurityGroup:
        db_sg = ec2.SecurityGroup(
            self,
            "DatabaseSecurityGroup",
            vpc=self.vpc,
            description="RDS PostgreSQL: port 5432 from the Glue job only",
            allow_all_outbound=False,
        )
        db_sg.add_ingress_rule(self.glue_sg, ec2.Port.tcp(DB_PORT), "PostgreSQL from the Glue job")
        self.glue_sg.add_egress_rule(db_sg, ec2.Port.tcp(DB_PORT), "PostgreSQL to the database")
        return db_sg

    def _instance(self) -> rds.DatabaseInstance:
        config = self.config
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_18)
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description="healthtech-etl: TLS only",
            parameters={"rds.force_ssl": "1"},
        )
        # RDS names its log group after the instance, and prod retains log groups on teardown: an
        # identifier unique to this stack lets the stack be deployed again next to the retained group.
        instance_id = stack_unique(config.name_prefix)
        # Created here (not by RDS) so that it has a retention and our key.
        self.db_log_group = logs.LogGroup(
            self,
            "PostgresLogs",
            log_group_name=f"/aws/rds/instance/{instance_id}/postgresql",
            retention=retention(config.log_retention_days),
            encryption_key=self.key,
            removal_policy=config.removal_policy,
        )
        instance = rds.DatabaseInstance(
            self,
            "Postgres",
            instance_identifier=instance_id,
            engine=engine,
            instance_type=ec2.InstanceType(config.db_instance_class),
            vpc=self.vpc,
            vpc_subnets=self.isolated_subnets,
            security_groups=[self.db_sg],
            port=DB_PORT,
            database_name=DB_NAME,
            credentials=rds.Credentials.from_generated_secret(
                DB_USER, secret_name=f"{config.name_prefix}/rds-credentials"
            ),
            parameter_group=parameters,
            publicly_accessible=False,
            storage_encrypted=True,
            storage_encryption_key=self.key,
            allocated_storage=20,
            max_allocated_storage=100,
            storage_type=rds.StorageType.GP3,
            multi_az=config.multi_az,
            deletion_protection=config.deletion_protection,
            backup_retention=Duration.days(config.backup_retention_days),
            delete_automated_backups=not config.is_prod,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            cloudwatch_logs_exports=["postgresql"],
            removal_policy=config.database_removal_policy,
        )
        instance.node.add_dependency(self.db_log_group)
        return instance
