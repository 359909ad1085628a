//go:build !mv2

// The AWS side of the live mode for machinery v1 (aws-sdk-go v1): the
// clients injected as Config.SQS.Client / Config.DynamoDB.Client and the
// harness's own calls on them (interop_transports.go: setupAWS). Mirror of
// transport_v2.go.
package main

import (
	"fmt"

	"github.com/RichardKnop/machinery/v1/config"
	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/request"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/dynamodb"
	"github.com/aws/aws-sdk-go/service/dynamodb/dynamodbattribute"
	"github.com/aws/aws-sdk-go/service/sqs"
)

// awsSession: static credentials, the region, and the endpoint unless ""
// (then the SDK's AWS endpoint). Shared config files are not read.
func awsSession(t *transport, endpoint string) (*session.Session, error) {
	cfg := aws.NewConfig().
		WithRegion(t.region).
		WithCredentials(credentials.NewStaticCredentials(t.accessKey, t.secretKey, t.sessionToken))
	if endpoint != "" {
		cfg = cfg.WithEndpoint(endpoint)
	}
	return session.NewSessionWithOptions(session.Options{Config: *cfg, SharedConfigState: session.SharedConfigDisable})
}

// injectSQS sets cnf.SQS with an *sqs.SQS client for t (t.sqsReceiveHook
// runs before every ReceiveMessage request).
func injectSQS(cnf *Config, t *transport) (*sqsOps, error) {
	sess, err := awsSession(t, t.sqsEndpoint)
	if err != nil {
		return nil, fmt.Errorf("sqs session: %v", err)
	}
	client := sqs.New(sess)
	if hook := t.sqsReceiveHook; hook != nil {
		client.Handlers.Send.PushFront(func(r *request.Request) {
			if r.Operation.Name == "ReceiveMessage" {
				hook()
			}
		})
	}
	cnf.SQS = &config.SQSConfig{Client: client, WaitTimeSeconds: t.sqsWait, VisibilityTimeout: t.visibility()}
	return &sqsOps{
		create: func(queue string, attributes map[string]string) error {
			in := &sqs.CreateQueueInput{QueueName: aws.String(queue), Attributes: aws.StringMap(attributes)}
			_, err := client.CreateQueue(in)
			return err
		},
		exists: func(queue string) error {
			_, err := client.GetQueueUrl(&sqs.GetQueueUrlInput{QueueName: aws.String(queue)})
			return err
		},
	}, nil
}

// injectDynamoDB sets cnf.DynamoDB with a *dynamodb.DynamoDB client for t.
func injectDynamoDB(cnf *Config, t *transport) (*dynamoOps, error) {
	sess, err := awsSession(t, t.ddbEndpoint)
	if err != nil {
		return nil, fmt.Errorf("dynamodb session: %v", err)
	}
	client := dynamodb.New(sess)
	cnf.DynamoDB = &config.DynamoDBConfig{Client: client, TaskStatesTable: t.taskStates, GroupMetasTable: t.groupMetas}
	return &dynamoOps{
		exists: func(table string) bool {
			_, err := client.DescribeTable(&dynamodb.DescribeTableInput{TableName: aws.String(table)})
			return err == nil
		},
		create: func(table, key string) error {
			_, err := client.CreateTable(&dynamodb.CreateTableInput{
				TableName:            aws.String(table),
				AttributeDefinitions: []*dynamodb.AttributeDefinition{{AttributeName: aws.String(key), AttributeType: aws.String(dynamodb.ScalarAttributeTypeS)}},
				KeySchema:            []*dynamodb.KeySchemaElement{{AttributeName: aws.String(key), KeyType: aws.String(dynamodb.KeyTypeHash)}},
				BillingMode:          aws.String(dynamodb.BillingModePayPerRequest),
			})
			if aerr, ok := err.(awserr.Error); ok && aerr.Code() == dynamodb.ErrCodeResourceInUseException {
				return nil // created concurrently by another process
			}
			return err
		},
		wait: func(table string) error {
			return client.WaitUntilTableExists(&dynamodb.DescribeTableInput{TableName: aws.String(table)})
		},
		groupMeta: func(table, groupUUID string) (*GroupMeta, bool, error) {
			out, err := client.GetItem(&dynamodb.GetItemInput{
				TableName:      aws.String(table),
				Key:            map[string]*dynamodb.AttributeValue{"GroupUUID": {S: aws.String(groupUUID)}},
				ConsistentRead: aws.Bool(true),
			})
			if err != nil || out.Item == nil {
				return nil, false, err
			}
			meta := new(GroupMeta)
			return meta, true, dynamodbattribute.UnmarshalMap(out.Item, meta)
		},
	}, nil
}
