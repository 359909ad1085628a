//go:build mv2

// The AWS side of the live mode for machinery v2 (aws-sdk-go-v2, v2.0.14+):
// the clients injected as Config.SQS.Client / Config.DynamoDB.Client and the
// harness's own calls on them (interop_transports.go: setupAWS). Mirror of
// transport_v1.go.
package main

import (
	"context"
	"errors"
	"time"

	sqsiface "github.com/RichardKnop/machinery/v2/brokers/iface/sqs"
	"github.com/RichardKnop/machinery/v2/config"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// awsCredentials are the static credentials of t.
func awsCredentials(t *transport) aws.CredentialsProvider {
	creds := aws.Credentials{AccessKeyID: t.accessKey, SecretAccessKey: t.secretKey, SessionToken: t.sessionToken, Source: "harness"}
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil })
}

func endpointOrNil(endpoint string) *string {
	if endpoint == "" {
		return nil
	}
	return aws.String(endpoint)
}

// hookedSQS calls hook before every ReceiveMessage (worker readiness).
type hookedSQS struct {
	sqsiface.API
	hook func()
}

func (h hookedSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	h.hook()
	return h.API.ReceiveMessage(ctx, in, opts...)
}

// injectSQS sets cnf.SQS with an *sqs.Client for t (wrapped so that
// t.sqsReceiveHook runs before every ReceiveMessage).
func injectSQS(cnf *Config, t *transport) (*sqsOps, error) {
	client := sqs.New(sqs.Options{Region: t.region, Credentials: awsCredentials(t), BaseEndpoint: endpointOrNil(t.sqsEndpoint)})
	var api sqsiface.API = client
	if t.sqsReceiveHook != nil {
		api = hookedSQS{API: client, hook: t.sqsReceiveHook}
	}
	cnf.SQS = &config.SQSConfig{Client: api, WaitTimeSeconds: t.sqsWait, VisibilityTimeout: t.visibility()}
	ctx := context.Background()
	return &sqsOps{
		create: func(queue string, attributes map[string]string) error {
			_, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(queue), Attributes: attributes})
			return err
		},
		exists: func(queue string) error {
			_, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(queue)})
			return err
		},
	}, nil
}

// injectDynamoDB sets cnf.DynamoDB with a *dynamodb.Client for t.
func injectDynamoDB(cnf *Config, t *transport) (*dynamoOps, error) {
	client := dynamodb.New(dynamodb.Options{Region: t.region, Credentials: awsCredentials(t), BaseEndpoint: endpointOrNil(t.ddbEndpoint)})
	cnf.DynamoDB = &config.DynamoDBConfig{Client: client, TaskStatesTable: t.taskStates, GroupMetasTable: t.groupMetas}
	ctx := context.Background()
	return &dynamoOps{
		exists: func(table string) bool {
			_, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
			return err == nil
		},
		create: func(table, key string) error {
			_, err := client.CreateTable(ctx, &dynamodb.CreateTableInput{
				TableName:            aws.String(table),
				AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String(key), AttributeType: ddbtypes.ScalarAttributeTypeS}},
				KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String(key), KeyType: ddbtypes.KeyTypeHash}},
				BillingMode:          ddbtypes.BillingModePayPerRequest,
			})
			var inUse *ddbtypes.ResourceInUseException
			if errors.As(err, &inUse) {
				return nil // created concurrently by another process
			}
			return err
		},
		wait: func(table string) error {
			waiter := dynamodb.NewTableExistsWaiter(client, func(o *dynamodb.TableExistsWaiterOptions) {
				o.MinDelay, o.MaxDelay = 100*time.Millisecond, time.Second
			})
			return waiter.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute)
		},
		groupMeta: func(table, groupUUID string) (*GroupMeta, bool, error) {
			out, err := client.GetItem(ctx, &dynamodb.GetItemInput{
				TableName:      aws.String(table),
				Key:            map[string]ddbtypes.AttributeValue{"GroupUUID": &ddbtypes.AttributeValueMemberS{Value: groupUUID}},
				ConsistentRead: aws.Bool(true),
			})
			if err != nil || out.Item == nil {
				return nil, false, err
			}
			meta := new(GroupMeta)
			return meta, true, attributevalue.UnmarshalMap(out.Item, meta)
		},
	}, nil
}
