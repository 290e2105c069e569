"""pytorch/examples mnist/main.py's data path: torchvision's datasets.MNIST read from ROOT with
ToTensor + Normalize, a random-crop/flip augmentation, the example's Net at 28x28, and
torchvision.utils.save_image of a batch. torchvision cannot be installed beside the PyTorch
wheel on this machine, so only the renamed program (dtrain.vision) runs in the tests."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torchvision import datasets, transforms
from torchvision.utils import save_image


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2304, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


parser = argparse.ArgumentParser(description='PyTorch MNIST Example')
parser.add_argument('--data', default='../data', help='where MNIST/raw/*-ubyte lie')
parser.add_argument('--batch-size', type=int, default=64)
parser.add_argument('--epochs', type=int, default=2)
parser.add_argument('--lr', type=float, default=1.0)
parser.add_argument('--log-interval', type=int, default=5)
args = parser.parse_args()
torch.manual_seed(1)
device = torch.device("cpu")

transform = transforms.Compose([
    transforms.ToTensor(),
    transforms.Normalize((0.1307,), (0.3081,))
])
augment = transforms.Compose([
    transforms.RandomCrop(28, padding=2),
    transforms.RandomHorizontalFlip(p=0.1),
    transform,
])
dataset1 = datasets.MNIST(args.data, train=True, download=True, transform=augment)
dataset2 = datasets.MNIST(args.data, train=False, transform=transform)
train_loader = torch.utils.data.DataLoader(dataset1, batch_size=args.batch_size, shuffle=True)
test_loader = torch.utils.data.DataLoader(dataset2, batch_size=1000)

model = Net().to(device)
optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
for epoch in range(1, args.epochs + 1):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print('Train Epoch: {} [{}/{}]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset), loss.item()))
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            pred = model(data).argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    print('Test set: Accuracy: {}/{} ({:.0f}%)'.format(correct, len(test_loader.dataset),
                                                       100. * correct / len(test_loader.dataset)))
    scheduler.step()

images, _ = next(iter(test_loader))
save_image(images[:16] * 0.3081 + 0.1307, 'samples.png', nrow=4)
print('saved samples.png')
